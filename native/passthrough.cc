// Raw-protocol patches for kernel FUSE passthrough (contract in passthrough.h). The layouts below
// are the kernel's (include/uapi/linux/fuse.h, protocol 7.40+); Debian 12's headers predate them.
#include "passthrough.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

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

}  // namespace

Passthrough::Passthrough(size_t inodes, bool enabled)
    : enabled_(enabled), backing_(inodes + 1, 0), cachedOpens_(inodes + 1, 0), passOpens_(inodes + 1, 0) {}

bool Passthrough::NoteRequest(const void* mem, size_t len) {
  if (!enabled_ || len < kInHeaderSize || Load32(mem, 4) != kOpInit) return false;
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
    const ssize_t r = writev(fd, patched, 2);
    if (r >= 0) negotiated_ = true;
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
  if (ino >= backing_.size()) return Mode::kCached;  // never counted: Released ignores it too
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
  if (ino >= backing_.size()) return;
  std::lock_guard<std::mutex> lock(mu_);
  uint32_t& n = mode == Mode::kPassthrough ? passOpens_[ino] : cachedOpens_[ino];
  if (n > 0) n--;
}

}  // namespace starlight
