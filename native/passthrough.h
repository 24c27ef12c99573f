// Kernel FUSE passthrough (Linux ≥ 6.9) on top of Debian 12's libfuse 3.14, which cannot negotiate
// it: the session's device I/O goes through fuse_session_custom_io, and this module patches two raw
// protocol replies on their way to /dev/fuse:
//   - the INIT reply: FUSE_INIT_EXT + FUSE_PASSTHROUGH (flags2 bit 5) and max_stack_depth = 1, only
//     when the kernel's INIT request offered FUSE_PASSTHROUGH;
//   - an open reply marked by the calling thread (MarkNextOpen): FOPEN_PASSTHROUGH + backing_id.
// Backing files are registered once per inode (ioctl FUSE_DEV_IOC_BACKING_OPEN on the session fd)
// and stay registered until the connection ends. The kernel then serves read/mmap of such opens from
// the backing file's page cache; the daemon never sees those reads.
//
// Kernel rule this module helps to keep (fs/fuse/iomode.c): while an inode is open through
// passthrough every open of it must be passthrough, and a passthrough open is refused (EIO to the
// caller) while the inode is open in cached mode. ModeFor() decides per open under one lock.
//
// Connection state that must survive the daemon (issue 13): the raw INIT request, the registered
// backing ids and the per-inode open counts of each mode live in a memfd mapping (the "state fd")
// that the fd holder keeps beside the /dev/fuse fd. A successor adopts both (Adopt), replays the
// recorded INIT into its own libfuse session (its reply is swallowed: the kernel saw INIT once) and
// goes on with the same backing ids and counts, so the iomode rule below still holds across takeovers.
//
// Not here: which files are complete (inode_table), the open reply itself (ops.cc).
#pragma once

#include <sys/uio.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace starlight {

class Passthrough {
 public:
  // `inodes`: highest inode number; `enabled`: false = never negotiate (the daemon serves all reads).
  Passthrough(size_t inodes, bool enabled);
  ~Passthrough();
  Passthrough(const Passthrough&) = delete;
  Passthrough& operator=(const Passthrough&) = delete;

  // Creates this session's state fd (memfd, mapped); false + errno-ish `error` on failure.
  bool CreateState(std::string* error);
  // Maps a predecessor's state fd (takes ownership of `fd` on success); false + `error` when it is
  // not a state of this layout or of another inode count.
  bool AdoptState(int fd, std::string* error);
  int StateFd() const { return stateFd_; }
  // The recorded INIT request (empty until one was seen).
  std::string InitRequest() const;
  // The next INIT reply is not written to the device (replayed INIT of a takeover); returns the
  // takeover count (file handle epoch) after incrementing it.
  uint32_t SwallowNextInit();
  uint32_t Epoch() const;
  // Requests read but not answered yet that may wait long (parked reads), for kernels without
  // FUSE_NOTIFY_RESEND: a successor answers them with EIO instead of letting them hang. Record
  // returns a slot (-1: table full, not recorded); Clear forgets it once answered.
  int RecordUnanswered(uint64_t unique);
  void ClearUnanswered(int slot);
  // Every recorded unique (then forgotten).
  std::vector<uint64_t> TakeUnanswered();

  // Serving threads: called with every raw request before libfuse processes it (records INIT).
  // Returns true for the INIT request.
  bool NoteRequest(const void* mem, size_t len);
  // True once the INIT reply carried FUSE_PASSTHROUGH.
  bool Negotiated() const { return negotiated_.load(); }
  // Why passthrough is off for this session, once known: 0 = not off (or not known yet),
  // else an errno (EOPNOTSUPP: the kernel did not offer it at INIT; else BACKING_OPEN's errno).
  int OffReason() const { return offReason_.load(); }

  enum class Mode { kCached, kPassthrough };
  // Decides how to open `ino`, whose content file is `path` (empty: not complete). On kPassthrough
  // `*backingId` is set. Every call must be paired with Released(ino, mode) when the kernel releases
  // the file. `*firstFailure` is set the first time backing registration fails (to log once);
  // `*registerErr` is the errno when this call tried to register `ino`'s backing file and failed, else 0.
  Mode ModeFor(int devFd, uint64_t ino, const std::string& path, int32_t* backingId, bool* firstFailure,
               int* registerErr);
  void Released(uint64_t ino, Mode mode);

  // The next open reply written by this thread carries FOPEN_PASSTHROUGH with `backingId`.
  static void MarkNextOpen(int32_t backingId);
  static void ClearNextOpen();

  // fuse_custom_io callbacks; `userdata` is the fuse session's userdata, whose Passthrough the
  // caller's trampoline passes here.
  ssize_t Writev(int fd, struct iovec* iov, int count);
  static ssize_t Read(int fd, void* buf, size_t len);

 private:
  int32_t Register(int devFd, const std::string& path, int* err);

  const bool enabled_;
  const size_t inodes_;
  int stateFd_ = -1;
  void* map_ = nullptr;
  size_t mapLen_ = 0;
  std::atomic<bool> swallowInit_{false};
  std::atomic<bool> offered_{false};
  std::atomic<bool> negotiated_{false};
  std::atomic<int> offReason_{0};
  std::atomic<uint64_t> initUnique_{0};
  std::mutex mu_;                     // guards the per-inode arrays below (in the state mapping)
  uint64_t* unanswered_ = nullptr;   // kMaxUnanswered slots, 0 = free (guarded by mu_)
  int32_t* backing_ = nullptr;        // by ino: 0 none yet, > 0 backing id, < 0 registration failed
  uint32_t* cachedOpens_ = nullptr;   // by ino: opens answered in cached mode and not yet released
  uint32_t* passOpens_ = nullptr;     // by ino: passthrough opens not yet released
  bool Map(int fd, bool create, std::string* error);
};

}  // namespace starlight
