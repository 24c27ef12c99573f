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
  std::atomic<bool> offered_{false};
  std::atomic<bool> negotiated_{false};
  std::atomic<int> offReason_{0};
  std::atomic<uint64_t> initUnique_{0};
  std::mutex mu_;                     // guards the per-inode vectors below
  std::vector<int32_t> backing_;      // by ino: 0 none yet, > 0 backing id, < 0 registration failed
  std::vector<uint32_t> cachedOpens_; // by ino: opens answered in cached mode and not yet released
  std::vector<uint32_t> passOpens_;   // by ino: passthrough opens not yet released
};

}  // namespace starlight
