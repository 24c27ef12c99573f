// Raw-protocol patches for kernel FUSE passthrough (contract in passthrough.h). The layouts below
// are the kernel's (include/uapi/linux/fuse.h, protocol 7.40+); Debian 12's headers predate them.
#include "passthrough.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace starlight {
namespace {

constexpr uint32_t kOpInit = 26;                 // FUSE_INIT
constexpr size_t kInHeaderSize = 40;             // struct fuse_in_header
constexpr size_t kOutHeaderSize = 16;            // struct fuse_out_header
constexpr uint32_t kInitExt = 1u << 30;          // FUSE_INIT_EXT: flags2 is valid
constexpr uint32_t kFlags2Passthrough = 1u << 5; // FUSE_PASSTHROUGH (1ULL << 37) in flags2
constexpr uint32_t kMaxStackDepth = 1;           // backing files on a plain fs; overlayfs may stack on top
constexpr uint32_t kFopenPassthrough = 1u << 7;  // FOPEN_PASSTHROUGH
// struct fuse_init_in offsets (after the in header): flags, flags2.
constexpr size_t kInitInFlags = 12, kInitInFlags2 = 16, kInitInMin = 20;
// struct fuse_init_out offsets: flags, flags2, max_stack_depth; full size (protocol ≥ 7.23).
constexpr size_t kInitOutFlags = 12, kInitOutFlags2 = 32, kInitOutStackDepth = 36, kInitOutSize = 64;
// struct fuse_open_out: fh (u64), open_flags (u32), backing_id (i32).
constexpr size_t kOpenOutSize = 16, kOpenOutFlags = 8, kOpenOutBackingId = 12;

struct BackingMap {  // struct fuse_backing_map
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);  // FUSE_DEV_IOC_BACKING_OPEN

uint32_t Load32(const void* p, size_t off) {
  uint32_t v;
  std::memcpy(&v, static_cast<const char*>(p) + off, sizeof(v));
  return v;
}
void Store32(void* p, size_t off, uint32_t v) { std::memcpy(static_cast<char*>(p) + off, &v, sizeof(v)); }

thread_local int32_t tlsNextOpenBacking = 0;

// Layout of the state fd (a memfd; only ever mapped by this build's code and its successors, so a
// layout change must change the magic): header, then backing ids, cached and passthrough open
// counts, each an array of inodes + 1 32-bit words.
constexpr char kStateMagic[8] = {'S', 'L', 'F', 'U', 'S', 'E', '2', '\0'};
constexpr size_t kMaxInitRecord = 256;  // fuse_in_header + fuse_init_in (104 bytes in 7.40)
struct StateHeader {
  char magic[8];
  uint64_t inodes;
  uint32_t epoch;    // takeovers so far (file handle epoch)
  uint32_t initLen;  // bytes of the recorded INIT request
  uint8_t init[kMaxInitRecord];
};
constexpr size_t kUnansweredAt = 512;
constexpr size_t kMaxUnanswered = 1024;  // parked reads at once beyond this are not recorded
constexpr size_t kStateArraysAt = kUnansweredAt + kMaxUnanswered * sizeof(uint64_t);
static_assert(sizeof(StateHeader) <= kUnansweredAt, "state header overflows");

StateHeader* Header(void* map) { return static_cast<StateHeader*>(map); }

}  // namespace

Passthrough::Passthrough(size_t inodes, bool enabled) : enabled_(enabled), inodes_(inodes) {}

Passthrough::~Passthrough() {
  if (map_ != nullptr) munmap(map_, mapLen_);
  if (stateFd_ >= 0) close(stateFd_);
}

bool Passthrough::Map(int fd, bool create, std::string* error) {
  const size_t len = kStateArraysAt + 3 * (inodes_ + 1) * sizeof(uint32_t);
  struct stat st;
  if (create) {
    if (ftruncate(fd, off_t(len)) != 0) {
      *error = std::string("cannot size the state fd: ") + std::strerror(errno);
      return false;
    }
  } else if (fstat(fd, &st) != 0 || size_t(st.st_size) != len) {
    *error = "the held state does not match this view (another inode count)";
    return false;
  }
  void* m = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    *error = std::string("cannot map the state fd: ") + std::strerror(errno);
    return false;
  }
  StateHeader* h = Header(m);
  if (create) {
    std::memcpy(h->magic, kStateMagic, sizeof(kStateMagic));
    h->inodes = inodes_;
  } else if (std::memcmp(h->magic, kStateMagic, sizeof(kStateMagic)) != 0 || h->inodes != inodes_ ||
             h->initLen < kInHeaderSize + kInitInMin || h->initLen > kMaxInitRecord) {
    munmap(m, len);
    *error = "the held state is not a view state of this layout and inode count";
    return false;
  }
  map_ = m;
  mapLen_ = len;
  stateFd_ = fd;
  unanswered_ = reinterpret_cast<uint64_t*>(static_cast<char*>(m) + kUnansweredAt);
  auto* words = reinterpret_cast<uint32_t*>(static_cast<char*>(m) + kStateArraysAt);
  backing_ = reinterpret_cast<int32_t*>(words);
  cachedOpens_ = words + (inodes_ + 1);
  passOpens_ = words + 2 * (inodes_ + 1);
  return true;
}

bool Passthrough::CreateState(std::string* error) {
  const int fd = memfd_create("starlight-view-state", MFD_CLOEXEC);
  if (fd < 0) {
    *error = std::string("memfd_create: ") + std::strerror(errno);
    return false;
  }
  if (!Map(fd, true, error)) {
    close(fd);
    return false;
  }
  return true;
}

bool Passthrough::AdoptState(int fd, std::string* error) { return Map(fd, false, error); }

std::string Passthrough::InitRequest() const {
  if (map_ == nullptr) return std::string();
  const StateHeader* h = Header(map_);
  return std::string(reinterpret_cast<const char*>(h->init), std::min<size_t>(h->initLen, kMaxInitRecord));
}

uint32_t Passthrough::SwallowNextInit() {
  swallowInit_ = true;
  return map_ != nullptr ? ++Header(map_)->epoch : 0;
}

uint32_t Passthrough::Epoch() const { return map_ != nullptr ? Header(map_)->epoch : 0; }

int Passthrough::RecordUnanswered(uint64_t unique) {
  if (unanswered_ == nullptr || unique == 0) return -1;
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < kMaxUnanswered; i++) {
    if (unanswered_[i] == 0) {
      unanswered_[i] = unique;
      return int(i);
    }
  }
  return -1;
}

void Passthrough::ClearUnanswered(int slot) {
  if (unanswered_ == nullptr || slot < 0 || size_t(slot) >= kMaxUnanswered) return;
  std::lock_guard<std::mutex> lock(mu_);
  unanswered_[slot] = 0;
}

std::vector<uint64_t> Passthrough::TakeUnanswered() {
  std::vector<uint64_t> out;
  if (unanswered_ == nullptr) return out;
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < kMaxUnanswered; i++) {
    if (unanswered_[i] != 0) out.push_back(unanswered_[i]);
    unanswered_[i] = 0;
  }
  return out;
}

bool Passthrough::NoteRequest(const void* mem, size_t len) {
  if (len < kInHeaderSize || Load32(mem, 4) != kOpInit) return false;
  if (map_ != nullptr && !swallowInit_.load()) {  // the first INIT of the connection: record it
    StateHeader* h = Header(map_);
    h->initLen = uint32_t(std::min(len, kMaxInitRecord));
    std::memcpy(h->init, mem, h->initLen);
  }
  if (!enabled_) return true;
  uint64_t unique;
  std::memcpy(&unique, static_cast<const char*>(mem) + 8, sizeof(unique));
  const char* in = static_cast<const char*>(mem) + kInHeaderSize;
  const bool offered = len >= kInHeaderSize + kInitInMin && (Load32(in, kInitInFlags) & kInitExt) != 0 &&
                       (Load32(in, kInitInFlags2) & kFlags2Passthrough) != 0;
  offered_ = offered;
  if (!offered) offReason_ = EOPNOTSUPP;
  initUnique_ = unique;
  return true;
}

void Passthrough::MarkNextOpen(int32_t backingId) { tlsNextOpenBacking = backingId; }
void Passthrough::ClearNextOpen() { tlsNextOpenBacking = 0; }

ssize_t Passthrough::Read(int fd, void* buf, size_t len) { return read(fd, buf, len); }

ssize_t Passthrough::Writev(int fd, struct iovec* iov, int count) {
  // A replayed INIT (takeover): the kernel saw the real one; libfuse only needs to believe it
  // answered. No serving thread runs during the replay, so the next reply is INIT's own.
  if (swallowInit_.exchange(false)) {
    size_t total = 0;
    for (int i = 0; i < count; i++) total += iov[i].iov_len;
    int32_t error = -1;
    if (count >= 1 && iov[0].iov_len == kOutHeaderSize) std::memcpy(&error, static_cast<const char*>(iov[0].iov_base) + 4, sizeof(error));
    if (error == 0 && offered_.load()) negotiated_ = true;
    initUnique_ = 0;
    return ssize_t(total);
  }
  if (count != 2 || iov[0].iov_len != kOutHeaderSize) return writev(fd, iov, count);
  int32_t error;
  uint64_t unique;
  std::memcpy(&error, static_cast<const char*>(iov[0].iov_base) + 4, sizeof(error));
  std::memcpy(&unique, static_cast<const char*>(iov[0].iov_base) + 8, sizeof(unique));
  if (error != 0) return writev(fd, iov, count);
  const uint64_t init = initUnique_.load();
  if (init != 0 && unique == init && offered_.load() && iov[1].iov_len >= kInitOutStackDepth + 4 &&
      iov[1].iov_len <= kInitOutSize) {
    char out[kInitOutSize];
    std::memcpy(out, iov[1].iov_base, iov[1].iov_len);
    Store32(out, kInitOutFlags, Load32(out, kInitOutFlags) | kInitExt);
    Store32(out, kInitOutFlags2, Load32(out, kInitOutFlags2) | kFlags2Passthrough);
    Store32(out, kInitOutStackDepth, kMaxStackDepth);
    struct iovec patched[2] = {iov[0], {out, iov[1].iov_len}};
    initUnique_ = 0;
    // Negotiated before the write: the kernel wakes the callers blocked on INIT inside this writev,
    // and their OPENs can reach another serving thread before this one runs again (under load, it
    // is preempted right there). Set afterwards, those opens were answered in cached mode, their
    // reads went through the daemon, and stats reported passthrough off. The kernel sends nothing
    // else before it has processed this reply, so nobody sees true too early.
    negotiated_ = true;
    const ssize_t r = writev(fd, patched, 2);
    if (r < 0) negotiated_ = false;  // the connection fails anyway; stats must not claim passthrough
    return r;
  }
  const int32_t backing = tlsNextOpenBacking;
  if (backing > 0 && iov[1].iov_len == kOpenOutSize) {
    tlsNextOpenBacking = 0;
    char out[kOpenOutSize];
    std::memcpy(out, iov[1].iov_base, kOpenOutSize);
    Store32(out, kOpenOutFlags, Load32(out, kOpenOutFlags) | kFopenPassthrough);
    Store32(out, kOpenOutBackingId, uint32_t(backing));
    struct iovec patched[2] = {iov[0], {out, kOpenOutSize}};
    return writev(fd, patched, 2);
  }
  return writev(fd, iov, count);
}

int32_t Passthrough::Register(int devFd, const std::string& path, int* err) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  BackingMap map{fd, 0, 0};
  const int id = ioctl(devFd, kIocBackingOpen, &map);
  *err = id > 0 ? 0 : (errno != 0 ? errno : EIO);
  close(fd);  // the kernel holds its own reference to the file
  return id > 0 ? id : -1;
}

Passthrough::Mode Passthrough::ModeFor(int devFd, uint64_t ino, const std::string& path, int32_t* backingId,
                                       bool* firstFailure, int* registerErr) {
  *firstFailure = false;
  *registerErr = 0;
  if (ino > inodes_ || backing_ == nullptr) return Mode::kCached;  // never counted: Released ignores it too
  std::lock_guard<std::mutex> lock(mu_);
  const bool eligible = enabled_ && negotiated_.load() && !path.empty() && cachedOpens_[ino] == 0;
  if (eligible && backing_[ino] == 0) {
    int err = 0;
    const int32_t id = Register(devFd, path, &err);
    backing_[ino] = id > 0 ? id : -1;
    if (id <= 0) *registerErr = err != 0 ? err : EIO;
    int none = 0;
    if (id <= 0 && offReason_.compare_exchange_strong(none, err)) *firstFailure = true;
  }
  if (eligible && backing_[ino] > 0) {
    passOpens_[ino]++;
    *backingId = backing_[ino];
    return Mode::kPassthrough;
  }
  // Cached mode is only possible while no passthrough open of this inode is live (kernel rule);
  // passthrough opens exist only for complete files, so `path` is non-empty whenever they do.
  if (passOpens_[ino] > 0 && backing_[ino] > 0) {
    passOpens_[ino]++;
    *backingId = backing_[ino];
    return Mode::kPassthrough;
  }
  cachedOpens_[ino]++;
  return Mode::kCached;
}

void Passthrough::Released(uint64_t ino, Mode mode) {
  if (ino > inodes_ || backing_ == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t& n = mode == Mode::kPassthrough ? passOpens_[ino] : cachedOpens_[ino];
  if (n > 0) n--;
}

}  // namespace starlight
