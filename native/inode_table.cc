// Decoding and queries of the inode table (layout: src/worker/fs/inodes.ts, "Inode table layout").
#include "inode_table.h"

#include <sys/sysmacros.h>

#include <cstring>
#include <mutex>

namespace starlight {
namespace {

uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);  // little-endian hosts only (x86_64/arm64)
  return v;
}

double F64(const uint8_t* p) {
  double v;
  std::memcpy(&v, p, 8);
  return v;
}

bool SpanOk(Span s, size_t limit) { return uint64_t(s.off) + s.len <= limit; }

}  // namespace

bool InodeTable::Decode(const uint8_t* inodes, size_t inodesLen, const uint8_t* dirents,
                        size_t direntsLen, const uint8_t* xattrs, size_t xattrsLen,
                        const uint8_t* strings, size_t stringsLen, std::string* error) {
  if (inodesLen == 0 || inodesLen % kInodeRecordSize != 0 || direntsLen % kDirentRecordSize != 0 ||
      xattrsLen % kXattrRecordSize != 0 || inodesLen / kInodeRecordSize > UINT32_MAX) {
    *error = "inode table buffers have a bad length";
    return false;
  }
  strings_.assign(reinterpret_cast<const char*>(strings), stringsLen);
  const size_t n = inodesLen / kInodeRecordSize;
  const size_t nd = direntsLen / kDirentRecordSize;
  const size_t nx = xattrsLen / kXattrRecordSize;
  inodes_.resize(n);
  content_.assign(n, std::string());
  dirents_.resize(nd);
  xattrs_.resize(nx);

  for (size_t i = 0; i < nd; i++) {
    const uint8_t* r = dirents + i * kDirentRecordSize;
    Dirent& d = dirents_[i];
    d.name = {U32(r), U32(r + 4)};
    d.ino = U32(r + 8);
    if (!SpanOk(d.name, stringsLen) || d.name.len == 0 || d.ino < 1 || d.ino > n) {
      *error = "dirent " + std::to_string(i) + " is out of range";
      return false;
    }
  }
  for (size_t i = 0; i < nx; i++) {
    const uint8_t* r = xattrs + i * kXattrRecordSize;
    Xattr& x = xattrs_[i];
    x.name = {U32(r), U32(r + 4)};
    x.value = {U32(r + 8), U32(r + 12)};
    if (!SpanOk(x.name, stringsLen) || !SpanOk(x.value, stringsLen) || x.name.len == 0) {
      *error = "xattr " + std::to_string(i) + " is out of range";
      return false;
    }
  }
  totalBytes_ = 0;
  for (size_t i = 0; i < n; i++) {
    const uint8_t* r = inodes + i * kInodeRecordSize;
    Inode& in = inodes_[i];
    in.mode = U32(r);
    in.uid = U32(r + 4);
    in.gid = U32(r + 8);
    in.nlink = U32(r + 12);
    in.rdevMajor = U32(r + 16);
    in.rdevMinor = U32(r + 20);
    const double size = F64(r + 24);
    const double mtime = F64(r + 32);
    in.mtimeNsec = U32(r + 40);
    in.parent = U32(r + 44);
    in.childStart = U32(r + 48);
    in.childCount = U32(r + 52);
    in.link = {U32(r + 56), U32(r + 60)};
    in.xattrStart = U32(r + 64);
    in.xattrCount = U32(r + 68);
    const Span content{U32(r + 72), U32(r + 76)};
    const std::string where = "inode " + std::to_string(i + 1);
    if (!(size >= 0 && size <= 9007199254740991.0) || !(mtime > -1e15 && mtime < 1e15) ||
        in.mtimeNsec >= 1000000000u) {
      *error = where + " has a bad size or mtime";
      return false;
    }
    in.size = uint64_t(size);
    in.mtimeSec = int64_t(mtime);
    const uint32_t type = in.mode & S_IFMT;
    if (type != S_IFREG && type != S_IFDIR && type != S_IFLNK && type != S_IFCHR &&
        type != S_IFBLK && type != S_IFIFO) {
      *error = where + " has an unknown file type";
      return false;
    }
    if (in.parent < 1 || in.parent > n || uint64_t(in.childStart) + in.childCount > nd ||
        uint64_t(in.xattrStart) + in.xattrCount > nx || !SpanOk(in.link, stringsLen) ||
        !SpanOk(content, stringsLen) || (type != S_IFDIR && in.childCount != 0)) {
      *error = where + " references data out of range";
      return false;
    }
    if (content.len > 0) content_[i] = std::string(Str(content));
    if (type == S_IFREG) totalBytes_ += in.size;
  }
  if ((inodes_[0].mode & S_IFMT) != S_IFDIR) {
    *error = "inode 1 (the root) is not a directory";
    return false;
  }
  // Lookup relies on byte order within each directory.
  for (const Inode& in : inodes_) {
    for (uint32_t c = 1; c < in.childCount; c++) {
      if (Str(dirents_[in.childStart + c - 1].name) >= Str(dirents_[in.childStart + c].name)) {
        *error = "directory entries are not sorted or not unique";
        return false;
      }
    }
  }
  return true;
}

uint64_t InodeTable::Lookup(const Inode& dir, std::string_view name) const {
  size_t lo = 0, hi = dir.childCount;
  while (lo < hi) {
    const size_t mid = lo + (hi - lo) / 2;
    const Dirent& d = dirents_[dir.childStart + mid];
    const int c = Str(d.name).compare(name);
    if (c == 0) return d.ino;
    if (c < 0) lo = mid + 1; else hi = mid;
  }
  return 0;
}

const Xattr* InodeTable::FindXattr(const Inode& in, std::string_view name) const {
  for (uint32_t i = 0; i < in.xattrCount; i++) {
    const Xattr& x = xattrs_[in.xattrStart + i];
    if (Str(x.name) == name) return &x;
  }
  return nullptr;
}

void InodeTable::FillStat(uint64_t ino, const Inode& in, struct stat* st) const {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_mode = in.mode;
  st->st_nlink = in.nlink;
  st->st_uid = in.uid;
  st->st_gid = in.gid;
  st->st_rdev = makedev(in.rdevMajor, in.rdevMinor);
  st->st_size = off_t(in.size);
  st->st_blksize = 4096;
  st->st_blocks = blkcnt_t((in.size + 511) / 512);
  st->st_mtim.tv_sec = in.mtimeSec;
  st->st_mtim.tv_nsec = in.mtimeNsec;
  st->st_atim = st->st_mtim;
  st->st_ctim = st->st_mtim;
}

std::string InodeTable::ContentPath(uint64_t ino) const {
  std::shared_lock<std::shared_mutex> lock(contentMu_);
  return ino >= 1 && ino <= content_.size() ? content_[ino - 1] : std::string();
}

bool InodeTable::HasContent(uint64_t ino) const {
  std::shared_lock<std::shared_mutex> lock(contentMu_);
  return ino >= 1 && ino <= content_.size() && !content_[ino - 1].empty();
}

bool InodeTable::SetContentPath(uint64_t ino, std::string path) {
  const Inode* in = Get(ino);
  if (in == nullptr || (in->mode & S_IFMT) != S_IFREG) return false;
  std::unique_lock<std::shared_mutex> lock(contentMu_);
  content_[ino - 1] = std::move(path);
  return true;
}

}  // namespace starlight
