// One FUSE session = one mounted view: its libfuse session, its serving threads, its inode table and
// its parked reads. Serving threads never block on data: a read of absent content is parked (the
// fuse_req is kept in `parked_`) and announced to JS through the session's thread-safe function; JS
// answers with Provide(). Unmount fails whatever is still parked with EIO.
//
// Device I/O goes through Passthrough (fuse_session_custom_io) so complete files can be opened with
// kernel passthrough (passthrough.h).
//
// Takeover (issue 13): a session can be handed to a successor process. Its /dev/fuse fd and its state
// fd (passthrough.h) are held by the fd holder; Adopt() serves such a connection without a kernel
// INIT, with the same inode numbers (the table is rebuilt from the same tree) and file handles that
// are slot indices tagged with a takeover epoch (handles of a predecessor are recognised as foreign
// and served by inode). Detach() stops serving without unmounting and without answering parked
// reads: they stay in the kernel's processing queue and the successor asks for them again with
// FUSE_NOTIFY_RESEND (Linux >= 6.9).
//
// Threading: FUSE threads run ops.cc callbacks; the JS thread calls Provide/MarkPresent/Stats/Unmount.
// Not here: N-API argument parsing (addon.cc), the per-op replies (ops.cc).
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <napi.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "inode_table.h"
#include "passthrough.h"

namespace starlight {

// Event kinds delivered to JS (exported as EVENT_* by addon.cc).
// kEventPassthroughOff: kernel passthrough is off for this session; `size` carries the errno
// (EOPNOTSUPP: the kernel did not offer it; else why registering a backing file failed). At most once.
// kEventNativeError: the addon itself answered (or degraded) an operation because of a native failure
// that JS never saw; `reqId` carries the NativeCause, `ino` the inode (0: session-wide), `size` the
// errno (0: a short read). Rate-limited: at most once per inode and cause, and a session-wide token
// bucket (kNativeErrorBurst, kNativeErrorsPerSec); the rest only count (stats nativeErrorsDropped).
enum EventKind : uint32_t {
  kEventRead = 1,
  kEventInterrupt = 2,
  kEventAccess = 3,
  kEventPassthroughOff = 4,
  kEventNativeError = 5
};

// Why the addon failed natively (kEventNativeError's cause; exported as CAUSE_* by addon.cc).
enum NativeCause : uint32_t {
  kCauseContentOpen = 1,      // open() of a complete file's content path failed
  kCauseContentRead = 2,      // pread() of a content file failed or came back short
  kCausePassthroughOpen = 3,  // the open reply carrying FOPEN_PASSTHROUGH could not be written
  kCauseBackingOpen = 4,      // FUSE_DEV_IOC_BACKING_OPEN refused this inode's content file
  kCauseServe = 5,            // a serving thread could not wait on / read the FUSE device
  kCauseCount = 6             // not a cause: size of per-cause arrays
};

struct Event {
  EventKind kind;
  uint64_t reqId;
  uint64_t ino;
  double offset;  // kEventAccess: milliseconds since mount
  uint32_t size;
};

void CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t* ctx, Event* ev);
using EventFn = Napi::TypedThreadSafeFunction<std::nullptr_t, Event, CallJs>;

struct MountOptions {
  std::string fsname = "starlight";
  std::string subtype = "starlight";
  unsigned threads = 4;        // serving threads; ops never block on data, so few are enough
  bool trace = false;          // report first access per inode
  unsigned maxBackground = 256;  // design.md: the kernel default 12 stalls every read of the mount
  double timeoutSec = 3600;    // attr/entry/negative timeouts (image content is immutable)
  bool passthrough = true;     // kernel passthrough for complete files when the kernel offers it
};

struct Stats {
  std::atomic<uint64_t> lookups{0}, getattrs{0}, readdirs{0}, opens{0}, reads{0}, readBytes{0},
      parked{0}, provided{0}, failed{0}, interrupts{0}, passthroughOpens{0};
  // `failed` split: error replies with the errno JS chose (provide), and parked reads failed by unmount.
  std::atomic<uint64_t> failedProvider{0}, failedUnmount{0};
  // Native failures by NativeCause (every occurrence, also those not reported as events).
  std::atomic<uint64_t> nativeErrors[kCauseCount]{};
  std::atomic<uint64_t> nativeErrorsDropped{0};  // occurrences not reported (rate limit)
};

// An open file: the content fd once the file is complete (-1 until then; unused in passthrough mode).
struct FileHandle {
  uint64_t ino = 0;
  Passthrough::Mode mode = Passthrough::Mode::kCached;
  std::atomic<int> fd{-1};
  ~FileHandle() {
    const int f = fd.load();
    if (f >= 0) close(f);
  }
};

class Session {
 public:
  Session(std::unique_ptr<InodeTable> table, MountOptions opts);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Mounts and starts the serving threads; false + `error` on failure (nothing left mounted).
  bool Start(const std::string& mountpoint, EventFn events, std::string* error);
  // Serves the live connection `devFd` mounted at `mountpoint` by a predecessor, whose state fd is
  // `stateFd`: replays the recorded INIT, asks the kernel to resend what the predecessor read but
  // never answered, starts the threads. Takes both fds (closed on failure); false + `error` when
  // the state does not fit this table or the session cannot start.
  bool Adopt(int devFd, int stateFd, const std::string& mountpoint, EventFn events, std::string* error);
  // Stops serving, keeps the mount: parked reads stay unanswered in the kernel, the device fd is
  // closed (a holder keeps the connection). Idempotent; Unmount afterwards does nothing.
  void Detach(bool releaseEvents = true);
  // Process exit: Detach when held by a holder, else Unmount.
  void AtExit() { held_.load() ? Detach(false) : Unmount(false); }
  void SetHeld(bool held) { held_ = held; }
  // 1: FUSE_NOTIFY_RESEND accepted at adopt, 0: not adopted, -errno: the kernel refused it.
  int ResendResult() const { return resend_; }
  // Idempotent. Fails parked reads with EIO, stops the threads, lazily detaches the mount.
  // `releaseEvents` is false only at process exit, when N-API must no longer be touched.
  void Unmount(bool releaseEvents = true);
  bool Alive() const { return running_.load() && !exited_.load(); }

  // JS thread: answers a parked read from `path` (or with errno when path is empty).
  // Returns false if the request is no longer parked (interrupted, failed by unmount).
  bool Provide(uint64_t reqId, const std::string& path, int err);
  bool MarkPresent(uint64_t ino, std::string path) { return table_->SetContentPath(ino, std::move(path)); }

  const InodeTable& Table() const { return *table_; }
  const MountOptions& Options() const { return opts_; }
  Stats& Counters() { return stats_; }
  size_t ParkedNow();
  Passthrough& Pt() { return pt_; }

  // File handles (ops.cc): slot indices tagged with the takeover epoch, never pointers.
  uint64_t NewHandle(uint64_t ino, Passthrough::Mode mode);
  // The handle `fh` of this session, or nullptr (a predecessor's handle, or unknown).
  FileHandle* FindHandle(uint64_t fh);
  // Frees `fh`; returns its open mode (decoded from `fh` itself for a predecessor's handle).
  Passthrough::Mode DropHandle(uint64_t fh);
  int DevFd() const { return se_ != nullptr ? fuse_session_fd(se_) : -1; }
  void NotePassthroughOff(int err) { Emit(Event{kEventPassthroughOff, 0, 0, 0, uint32_t(err)}); }
  // Any thread: counts a native failure and reports it to JS (kEventNativeError, rate-limited).
  void NoteNativeError(uint64_t ino, NativeCause cause, int err);

  // FUSE threads (ops.cc).
  void Park(fuse_req_t req, uint64_t ino, uint64_t off, uint32_t size);
  void NoteAccess(uint64_t ino);
  static void OnInterrupt(fuse_req_t req, void* data);

 private:
  struct Parked {
    fuse_req_t req;
    uint64_t ino;
    uint64_t off;
    uint32_t size;
    int slot;  // Passthrough::RecordUnanswered slot (-1: not recorded)
  };
  void Serve();
  void Emit(const Event& ev);
  void ReplyFromFile(fuse_req_t req, uint64_t ino, const std::string& path, uint64_t off, uint32_t size);
  bool TakeErrorToken();

  std::unique_ptr<InodeTable> table_;
  MountOptions opts_;
  Passthrough pt_;
  Stats stats_;
  fuse_session* se_ = nullptr;
  EventFn events_;
  bool haveEvents_ = false;
  int stopFd_ = -1;  // eventfd: readable once the threads must stop
  std::vector<std::thread> threads_;
  std::atomic<bool> running_{false};
  std::atomic<bool> exited_{false};
  std::chrono::steady_clock::time_point mountedAt_;
  std::unique_ptr<std::atomic<uint8_t>[]> accessed_;
  std::unique_ptr<std::atomic<uint8_t>[]> errorReported_;  // by ino (0: session): bit per NativeCause
  std::string mountpoint_;  // set for adopted sessions, which unmount it themselves
  bool adopted_ = false;
  std::atomic<bool> held_{false};
  int resend_ = 0;
  bool StartThreads(std::string* error);
  void StopThreads();

  std::mutex handleMu_;  // guards handles_ and freeHandles_
  std::vector<std::unique_ptr<FileHandle>> handles_;
  std::vector<uint32_t> freeHandles_;
  uint64_t epoch_ = 0;  // takeover count of the connection, in the top bits of every handle

  std::mutex errMu_;  // guards the native-error token bucket
  double errTokens_;
  std::chrono::steady_clock::time_point errRefilledAt_;

  std::mutex mu_;  // guards parked_, nextReqId_, closing_
  std::unordered_map<uint64_t, Parked> parked_;
  uint64_t nextReqId_ = 1;
  bool closing_ = false;
};

}  // namespace starlight
