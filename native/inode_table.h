// The immutable inode table of one view: decoded once from the buffers TypeScript builds
// (src/worker/fs/inodes.ts documents the record layout; keep both in sync), then read by the FUSE
// threads without locks. The only mutable part is each inode's content path (markPresent), guarded
// by a shared mutex.
//
// Not here: FUSE replies (ops.cc), parked reads (session.cc), N-API (addon.cc).
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

namespace starlight {

// Record sizes in bytes; must equal INODE_RECORD_SIZE etc. in src/worker/fs/inodes.ts.
constexpr size_t kInodeRecordSize = 80;
constexpr size_t kDirentRecordSize = 12;
constexpr size_t kXattrRecordSize = 16;

struct Span {
  uint32_t off = 0;
  uint32_t len = 0;
};

struct Dirent {
  Span name;
  uint64_t ino = 0;
};

struct Xattr {
  Span name;
  Span value;
};

struct Inode {
  uint32_t mode = 0;  // full st_mode (type and permission bits)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 1;
  uint32_t rdevMajor = 0;
  uint32_t rdevMinor = 0;
  uint64_t size = 0;
  int64_t mtimeSec = 0;
  uint32_t mtimeNsec = 0;
  uint64_t parent = 1;
  uint32_t childStart = 0;  // index into dirents
  uint32_t childCount = 0;
  Span link;                // symlink target
  uint32_t xattrStart = 0;  // index into xattrs
  uint32_t xattrCount = 0;
};

class InodeTable {
 public:
  // Decodes and validates; on bad input returns false and sets `error` (never throws).
  bool Decode(const uint8_t* inodes, size_t inodesLen, const uint8_t* dirents, size_t direntsLen,
              const uint8_t* xattrs, size_t xattrsLen, const uint8_t* strings, size_t stringsLen,
              std::string* error);

  size_t Count() const { return inodes_.size(); }
  // Inode numbers are 1-based (1 = root, FUSE_ROOT_ID); returns nullptr when out of range.
  const Inode* Get(uint64_t ino) const {
    return ino >= 1 && ino <= inodes_.size() ? &inodes_[ino - 1] : nullptr;
  }
  std::string_view Str(Span s) const { return std::string_view(strings_.data() + s.off, s.len); }
  const Dirent* Child(const Inode& dir, uint32_t i) const {
    return i < dir.childCount ? &dirents_[dir.childStart + i] : nullptr;
  }
  // Binary search of `name` among the children of `dir` (sorted by bytes); 0 if absent.
  uint64_t Lookup(const Inode& dir, std::string_view name) const;
  const Xattr* FindXattr(const Inode& in, std::string_view name) const;
  const Xattr* XattrAt(const Inode& in, uint32_t i) const {
    return i < in.xattrCount ? &xattrs_[in.xattrStart + i] : nullptr;
  }
  void FillStat(uint64_t ino, const Inode& in, struct stat* st) const;
  uint64_t TotalBytes() const { return totalBytes_; }

  // Content path of a complete file, or empty if its content is not present yet.
  std::string ContentPath(uint64_t ino) const;
  bool HasContent(uint64_t ino) const;
  bool SetContentPath(uint64_t ino, std::string path);

 private:
  std::vector<Inode> inodes_;
  std::vector<Dirent> dirents_;
  std::vector<Xattr> xattrs_;
  std::string strings_;
  uint64_t totalBytes_ = 0;
  mutable std::shared_mutex contentMu_;
  std::vector<std::string> content_;  // by ino - 1
};

}  // namespace starlight
