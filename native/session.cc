// Session lifecycle, serving loop and parked reads (contract in session.h).
#include "session.h"

#include "fuse_raw.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace starlight {

const fuse_lowlevel_ops& LowLevelOps();  // ops.cc

namespace {

// File handle layout: bits 0..31 slot + 1, bit 32 passthrough mode, bits 40..63 takeover epoch.
constexpr uint64_t kHandleSlotMask = 0xffffffffull;
constexpr uint64_t kHandlePassthrough = 1ull << 32;
constexpr int kHandleEpochShift = 40;

// Largest single read we answer from provide(); the kernel never asks for more than max_pages.
constexpr uint32_t kMaxReadSize = 4u << 20;
// Native-error events: a storm (a whole directory's content gone) must not flood the JS thread.
constexpr double kNativeErrorBurst = 16;     // events; bucket capacity
constexpr double kNativeErrorsPerSec = 4;    // events per second; refill rate

// Live sessions of the whole process, for the atexit handler: process.exit() ends the process with
// exit() and runs no N-API env cleanup hooks, so without this a mount would outlive its process.
struct Registry {
  std::mutex mu;
  std::vector<Session*> live;
};

Registry& Live() {
  static Registry* r = new Registry();  // never destroyed: used from atexit
  return *r;
}

// fuse_custom_io trampolines: libfuse passes the session's userdata (our Session).
ssize_t IoWritev(int fd, struct iovec* iov, int count, void* userdata) {
  return static_cast<Session*>(userdata)->Pt().Writev(fd, iov, count);
}
ssize_t IoRead(int fd, void* buf, size_t len, void*) { return Passthrough::Read(fd, buf, len); }

// The raw unique of the request the calling serving thread is processing (Park records it).
thread_local uint64_t tlsUnique = 0;

void UnmountAllAtExit() {
  std::vector<Session*> all;
  {
    std::lock_guard<std::mutex> lock(Live().mu);
    all = Live().live;
  }
  for (Session* s : all) s->AtExit();
}

}  // namespace

void CallJs(Napi::Env env, Napi::Function fn, std::nullptr_t*, Event* ev) {
  std::unique_ptr<Event> owned(ev);
  if (env == nullptr || fn.IsEmpty()) return;
  fn.Call({Napi::Number::New(env, ev->kind), Napi::Number::New(env, double(ev->reqId)),
           Napi::Number::New(env, double(ev->ino)), Napi::Number::New(env, ev->offset),
           Napi::Number::New(env, ev->size)});
}

Session::Session(std::unique_ptr<InodeTable> table, MountOptions opts)
    : table_(std::move(table)), opts_(std::move(opts)), pt_(table_->Count(), opts_.passthrough) {
  accessed_.reset(new std::atomic<uint8_t>[table_->Count() + 1]());
  errorReported_.reset(new std::atomic<uint8_t>[table_->Count() + 1]());
  errTokens_ = kNativeErrorBurst;
  errRefilledAt_ = std::chrono::steady_clock::now();
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(UnmountAllAtExit); });
  std::lock_guard<std::mutex> lock(Live().mu);
  Live().live.push_back(this);
}

Session::~Session() {
  Unmount();
  std::lock_guard<std::mutex> lock(Live().mu);
  auto& v = Live().live;
  v.erase(std::remove(v.begin(), v.end(), this), v.end());
}

bool Session::Start(const std::string& mountpoint, EventFn events, std::string* error) {
  events_ = events;
  haveEvents_ = true;
  if (!pt_.CreateState(error)) return false;
  const std::string o = "ro,allow_other,default_permissions,fsname=" + opts_.fsname +
                        ",subtype=" + opts_.subtype;
  const char* argv[] = {"starlight", "-o", o.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  se_ = fuse_session_new(&args, &LowLevelOps(), sizeof(fuse_lowlevel_ops), this);
  fuse_opt_free_args(&args);  // option parsing may have copied argv onto the heap
  if (se_ == nullptr) {
    *error = "fuse_session_new failed (bad mount options?)";
    return false;
  }
  if (fuse_session_mount(se_, mountpoint.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    *error = "fuse_session_mount failed (does the directory exist, is /dev/fuse usable, are we root?)";
    return false;
  }
  const int fd = fuse_session_fd(se_);
  // Device I/O through Passthrough: it records INIT for a successor and patches the INIT and open
  // replies for kernel passthrough (no splice either way).
  fuse_custom_io io{};
  io.writev = IoWritev;
  io.read = IoRead;
  if (fuse_session_custom_io(se_, &io, fd) != 0) {
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
    se_ = nullptr;
    *error = "fuse_session_custom_io failed";
    return false;
  }
  epoch_ = pt_.Epoch();
  if (!StartThreads(error)) {
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
    se_ = nullptr;
    return false;
  }
  return true;
}

bool Session::Adopt(int devFd, int stateFd, const std::string& mountpoint, EventFn events, std::string* error) {
  if (!pt_.AdoptState(stateFd, error)) {
    close(stateFd);
    close(devFd);
    return false;
  }
  const std::string init = pt_.InitRequest();
  const std::string o = "ro,allow_other,default_permissions,fsname=" + opts_.fsname +
                        ",subtype=" + opts_.subtype;
  const char* argv[] = {"starlight", "-o", o.c_str()};
  fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
  se_ = fuse_session_new(&args, &LowLevelOps(), sizeof(fuse_lowlevel_ops), this);
  fuse_opt_free_args(&args);
  fuse_custom_io io{};
  io.writev = IoWritev;
  io.read = IoRead;
  if (se_ == nullptr || fuse_session_custom_io(se_, &io, devFd) != 0) {
    if (se_ != nullptr) fuse_session_destroy(se_);  // closes no fd: custom_io failed or never ran
    se_ = nullptr;
    close(devFd);
    *error = "cannot create a libfuse session for the held connection";
    return false;
  }
  // libfuse 3.14 has no "already initialised" mode: replay the connection's INIT (recorded by the
  // first session) so its state matches what the kernel negotiated; the reply is swallowed.
  epoch_ = pt_.SwallowNextInit();
  std::string copy = init;
  fuse_buf buf{};
  buf.size = copy.size();
  buf.mem = copy.data();
  pt_.NoteRequest(copy.data(), copy.size());
  fuse_session_process_buf(se_, &buf);
  events_ = events;
  haveEvents_ = true;
  adopted_ = true;
  mountpoint_ = mountpoint;
  // Requests the predecessor read but never answered sit in the processing queue of this very
  // open file: move them back to pending (they come again with FUSE_UNIQUE_RESEND set).
  if (getenv("STARLIGHT_TEST_NO_RESEND") != nullptr) {
    resend_ = -EINVAL;  // tests: behave as on a kernel < 6.9, which refuses the notification
  } else {
    const int rc = WriteOutHeader(devFd, kNotifyResend, 0);
    resend_ = rc == 0 ? 1 : rc;
  }
  // Without resend (Linux < 6.9) the parked reads the predecessor recorded would hang: fail them.
  for (const uint64_t unique : pt_.TakeUnanswered()) {
    if (resend_ > 0) continue;  // resent: they come again as new requests
    (void)WriteOutHeader(devFd, -EIO, unique);
    stats_.failed++;
    stats_.failedUnmount++;
  }
  if (!StartThreads(error)) {
    fuse_session_destroy(se_);  // closes devFd
    se_ = nullptr;
    return false;
  }
  return true;
}

bool Session::StartThreads(std::string* error) {
  const int fd = fuse_session_fd(se_);
  stopFd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stopFd_ < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    *error = std::string("cannot set up the serving loop: ") + std::strerror(errno);
    return false;
  }
  mountedAt_ = std::chrono::steady_clock::now();
  running_ = true;
  // Serving threads take no signals: Node's handlers belong to the JS thread.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  try {
    for (unsigned i = 0; i < opts_.threads; i++) threads_.emplace_back([this] { Serve(); });
  } catch (...) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    *error = "cannot start serving threads";
    StopThreads();
    return false;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return true;
}

void Session::StopThreads() {
  if (stopFd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(stopFd_, &one, sizeof(one));
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
  if (stopFd_ >= 0) close(stopFd_);
  stopFd_ = -1;
  running_ = false;
}

void Session::Detach(bool releaseEvents) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_) return;
    closing_ = true;
    parked_.clear();  // unanswered on purpose: the successor gets them again (FUSE_NOTIFY_RESEND)
  }
  StopThreads();
  if (se_ != nullptr) {
    fuse_session_destroy(se_);  // closes our device fd; the holder's keeps the connection
    se_ = nullptr;
  }
  exited_ = true;
  if (haveEvents_ && releaseEvents) events_.Release();
  haveEvents_ = false;
}

uint64_t Session::NewHandle(uint64_t ino, Passthrough::Mode mode) {
  auto h = std::make_unique<FileHandle>();
  h->ino = ino;
  h->mode = mode;
  std::lock_guard<std::mutex> lock(handleMu_);
  uint32_t slot;
  if (!freeHandles_.empty()) {
    slot = freeHandles_.back();
    freeHandles_.pop_back();
    handles_[slot] = std::move(h);
  } else {
    slot = uint32_t(handles_.size());
    handles_.push_back(std::move(h));
  }
  return (uint64_t(slot) + 1) | (mode == Passthrough::Mode::kPassthrough ? kHandlePassthrough : 0) |
         (epoch_ << kHandleEpochShift);
}

FileHandle* Session::FindHandle(uint64_t fh) {
  if ((fh >> kHandleEpochShift) != (epoch_ & 0xffffff)) return nullptr;
  const uint64_t slot = (fh & kHandleSlotMask) - 1;
  std::lock_guard<std::mutex> lock(handleMu_);
  return slot < handles_.size() ? handles_[slot].get() : nullptr;
}

Passthrough::Mode Session::DropHandle(uint64_t fh) {
  const Passthrough::Mode mode = (fh & kHandlePassthrough) != 0 ? Passthrough::Mode::kPassthrough : Passthrough::Mode::kCached;
  if ((fh >> kHandleEpochShift) != (epoch_ & 0xffffff)) return mode;
  const uint64_t slot = (fh & kHandleSlotMask) - 1;
  std::unique_ptr<FileHandle> gone;  // closed outside the lock
  std::lock_guard<std::mutex> lock(handleMu_);
  if (slot < handles_.size() && handles_[slot] != nullptr) {
    gone = std::move(handles_[slot]);
    freeHandles_.push_back(uint32_t(slot));
  }
  return mode;
}

// Each thread waits on the device (EPOLLEXCLUSIVE: one wakes per request) and on stopFd_, and
// drains the non-blocking device until EAGAIN. No thread ever waits for content.
void Session::Serve() {
  const int fd = fuse_session_fd(se_);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) {
    NoteNativeError(0, kCauseServe, errno);
    exited_ = true;
    return;
  }
  epoll_event dev{};
  dev.events = EPOLLIN | EPOLLEXCLUSIVE;
  dev.data.fd = fd;
  epoll_event stop{};
  stop.events = EPOLLIN;
  stop.data.fd = stopFd_;
  // EPOLLEXCLUSIVE needs Linux 4.5 (and is refused by some tools, e.g. valgrind): fall back to a
  // plain registration (all idle threads wake; the losers get EAGAIN).
  bool ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &dev) == 0;
  if (!ok) {
    dev.events = EPOLLIN;
    ok = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &dev) == 0;
  }
  if (!ok || epoll_ctl(ep, EPOLL_CTL_ADD, stopFd_, &stop) != 0) {
    NoteNativeError(0, kCauseServe, errno);
    close(ep);
    exited_ = true;  // a thread that cannot wait must not pretend to serve
    return;
  }
  fuse_buf buf{};
  bool stopping = false;
  while (!stopping) {
    epoll_event evs[2];
    const int n = epoll_wait(ep, evs, 2, -1);
    if (n < 0 && errno != EINTR) {
      NoteNativeError(0, kCauseServe, errno);
      break;
    }
    for (int i = 0; i < n; i++) {
      if (evs[i].data.fd == stopFd_) stopping = true;
    }
    while (!stopping) {
      const int res = fuse_session_receive_buf(se_, &buf);
      if (res == -EINTR) continue;
      if (res == -EAGAIN) break;
      if (res <= 0 || fuse_session_exited(se_)) {
        // ENODEV (or 0): the kernel side is gone (unmounted/aborted from outside).
        if (res < 0 && res != -ENODEV) NoteNativeError(0, kCauseServe, -res);
        exited_ = true;
        fuse_session_exit(se_);
        const uint64_t one = 1;
        (void)!write(stopFd_, &one, sizeof(one));
        stopping = true;
        break;
      }
      const bool init = (buf.flags & FUSE_BUF_IS_FD) == 0 && pt_.NoteRequest(buf.mem, size_t(res));
      tlsUnique = 0;
      if ((buf.flags & FUSE_BUF_IS_FD) == 0 && size_t(res) >= 16) std::memcpy(&tlsUnique, static_cast<char*>(buf.mem) + 8, sizeof(tlsUnique));
      fuse_session_process_buf(se_, &buf);
      if (init && opts_.passthrough && !pt_.Negotiated()) NotePassthroughOff(pt_.OffReason());
    }
  }
  free(buf.mem);
  close(ep);
}

void Session::Unmount(bool releaseEvents) {
  std::vector<Parked> failing;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_) return;
    closing_ = true;
    for (auto& [id, p] : parked_) failing.push_back(p);
    parked_.clear();
  }
  for (const Parked& p : failing) {
    pt_.ClearUnanswered(p.slot);
    fuse_reply_err(p.req, EIO);
    stats_.failed++;
    stats_.failedUnmount++;
  }
  StopThreads();
  if (se_ != nullptr) {
    // Closes the device fd (aborting the connection: blocked callers get ENOTCONN) then lazily
    // detaches the mount (umount2 MNT_DETACH as root, fusermount3 -uz otherwise). An adopted
    // session's libfuse never mounted: it detaches the mount itself.
    fuse_session_unmount(se_);
    fuse_session_destroy(se_);
    se_ = nullptr;
    if (adopted_) umount2(mountpoint_.c_str(), MNT_DETACH);
  }
  exited_ = true;
  if (haveEvents_ && releaseEvents) events_.Release();
  haveEvents_ = false;
}

size_t Session::ParkedNow() {
  std::lock_guard<std::mutex> lock(mu_);
  return parked_.size();
}

void Session::Emit(const Event& ev) {
  Event* copy = new (std::nothrow) Event(ev);
  if (copy == nullptr) return;
  if (events_.NonBlockingCall(copy) != napi_ok) delete copy;
}

// Interrupt registration happens before the request becomes visible to Provide/Unmount, so a reply
// can never race with registration on a freed request; `interrupted` is re-checked under mu_ because
// OnInterrupt takes mu_ too (libfuse calls it with the request's own lock held, never ours).
void Session::Park(fuse_req_t req, uint64_t ino, uint64_t off, uint32_t size) {
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = nextReqId_++;
  }
  fuse_req_interrupt_func(req, &Session::OnInterrupt, reinterpret_cast<void*>(uintptr_t(id)));
  int err = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closing_) {
      err = EIO;
    } else if (fuse_req_interrupted(req)) {
      err = EINTR;
    } else {
      parked_.emplace(id, Parked{req, ino, off, size, pt_.RecordUnanswered(tlsUnique)});
    }
  }
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  stats_.parked++;
  Emit(Event{kEventRead, id, ino, double(off), size});
}

void Session::OnInterrupt(fuse_req_t req, void* data) {
  auto* self = static_cast<Session*>(fuse_req_userdata(req));
  const uint64_t id = uint64_t(reinterpret_cast<uintptr_t>(data));
  int slot = -1;
  {
    std::lock_guard<std::mutex> lock(self->mu_);
    auto it = self->parked_.find(id);
    if (it == self->parked_.end()) return;
    slot = it->second.slot;
    self->parked_.erase(it);
  }
  self->pt_.ClearUnanswered(slot);
  self->stats_.interrupts++;
  fuse_reply_err(req, EINTR);
  self->Emit(Event{kEventInterrupt, id, 0, 0, 0});
}

void Session::NoteAccess(uint64_t ino) {
  if (!opts_.trace || ino > table_->Count() || accessed_[ino].exchange(1) != 0) return;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - mountedAt_).count();
  Emit(Event{kEventAccess, 0, ino, ms, 0});
}

bool Session::TakeErrorToken() {
  std::lock_guard<std::mutex> lock(errMu_);
  const auto now = std::chrono::steady_clock::now();
  const double sec = std::chrono::duration<double>(now - errRefilledAt_).count();
  errRefilledAt_ = now;
  errTokens_ = std::min(kNativeErrorBurst, errTokens_ + sec * kNativeErrorsPerSec);
  if (errTokens_ < 1) return false;
  errTokens_ -= 1;
  return true;
}

void Session::NoteNativeError(uint64_t ino, NativeCause cause, int err) {
  if (cause <= 0 || cause >= kCauseCount) return;
  stats_.nativeErrors[cause]++;
  const uint64_t slot = ino <= table_->Count() ? ino : 0;
  const uint8_t bit = uint8_t(1u << cause);
  if ((errorReported_[slot].load() & bit) != 0) return;  // already reported for this inode
  if (!haveEvents_ || !TakeErrorToken()) {
    stats_.nativeErrorsDropped++;
    return;
  }
  if ((errorReported_[slot].fetch_or(bit) & bit) != 0) return;  // lost a race to another thread
  Emit(Event{kEventNativeError, uint64_t(cause), ino, 0, uint32_t(err < 0 ? 0 : err)});
}

bool Session::Provide(uint64_t reqId, const std::string& path, int err) {
  Parked p;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = parked_.find(reqId);
    if (it == parked_.end()) return false;
    p = it->second;
    parked_.erase(it);
  }
  pt_.ClearUnanswered(p.slot);
  if (path.empty()) {
    fuse_reply_err(p.req, err > 0 ? err : EIO);
    stats_.failed++;
    stats_.failedProvider++;
    return true;
  }
  ReplyFromFile(p.req, p.ino, path, p.off, p.size);
  return true;
}

void Session::ReplyFromFile(fuse_req_t req, uint64_t ino, const std::string& path, uint64_t off, uint32_t size) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fuse_reply_err(req, EIO);
    stats_.failed++;
    NoteNativeError(ino, kCauseContentOpen, err);
    return;
  }
  std::vector<char> buf(std::min(size, kMaxReadSize));
  size_t got = 0;
  bool failed = false;
  int readErr = 0;  // 0 with got < want: the content file is shorter than the read
  while (got < buf.size()) {
    const ssize_t r = pread(fd, buf.data() + got, buf.size() - got, off_t(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      readErr = errno;
      failed = got == 0;
    }
    if (r <= 0) break;
    got += size_t(r);
  }
  close(fd);
  // The read size is clamped to the inode size (ops.cc), so any shortfall is a damaged content file.
  if (got < buf.size()) NoteNativeError(ino, kCauseContentRead, readErr);
  if (failed) {
    fuse_reply_err(req, EIO);
    stats_.failed++;
    return;
  }
  stats_.provided++;
  stats_.readBytes += got;
  fuse_reply_buf(req, buf.data(), got);
}

}  // namespace starlight
