// The libfuse low-level operations, all answered from the inode table without touching JS, except
// reads of absent content (parked, see Session::Park). Every callback catches everything: no C++
// exception may cross into libfuse (C), so a failure becomes EIO.
#include <errno.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "session.h"

namespace starlight {
namespace {

Session& S(fuse_req_t req) { return *static_cast<Session*>(fuse_req_userdata(req)); }

// Guards a callback body: any exception becomes an EIO reply.
template <typename F>
void Guard(fuse_req_t req, F&& body) {
  try {
    body();
  } catch (...) {
    fuse_reply_err(req, EIO);
  }
}

void FillEntry(const Session& s, uint64_t ino, fuse_entry_param* e) {
  std::memset(e, 0, sizeof(*e));
  e->attr_timeout = s.Options().timeoutSec;
  e->entry_timeout = s.Options().timeoutSec;
  if (ino == 0) return;  // negative entry, cached for entry_timeout
  e->ino = ino;
  e->generation = 1;
  s.Table().FillStat(ino, *s.Table().Get(ino), &e->attr);
}

void Init(void* userdata, fuse_conn_info* conn) {
  auto* s = static_cast<Session*>(userdata);
  conn->max_background = s->Options().maxBackground;
  conn->congestion_threshold = s->Options().maxBackground * 3 / 4;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;  // always plus: measured faster for find (design.md)
  conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  // Symlink targets come from the TOC and never change: the kernel keeps them in the page cache
  // instead of asking READLINK on every path walk through a link (Debian's /lib -> usr/lib).
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guard(req, [&] {
    Session& s = S(req);
    s.Counters().lookups++;
    const Inode* dir = s.Table().Get(parent);
    if (dir == nullptr || (dir->mode & S_IFMT) != S_IFDIR) return (void)fuse_reply_err(req, ENOTDIR);
    const uint64_t ino = s.Table().Lookup(*dir, name);
    if (ino != 0) s.NoteAccess(ino);
    fuse_entry_param e;
    FillEntry(s, ino, &e);
    fuse_reply_entry(req, &e);
  });
}

void Forget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }  // inodes are static
void ForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guard(req, [&] {
    Session& s = S(req);
    s.Counters().getattrs++;
    const Inode* in = s.Table().Get(ino);
    if (in == nullptr) return (void)fuse_reply_err(req, ENOENT);
    struct stat st;
    s.Table().FillStat(ino, *in, &st);
    fuse_reply_attr(req, &st, s.Options().timeoutSec);
  });
}

void ReadLink(fuse_req_t req, fuse_ino_t ino) {
  Guard(req, [&] {
    Session& s = S(req);
    const Inode* in = s.Table().Get(ino);
    if (in == nullptr || (in->mode & S_IFMT) != S_IFLNK) return (void)fuse_reply_err(req, EINVAL);
    const std::string target(s.Table().Str(in->link));
    fuse_reply_readlink(req, target.c_str());
  });
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, [&] {
    Session& s = S(req);
    s.Counters().opens++;
    const Inode* in = s.Table().Get(ino);
    if (in == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if ((fi->flags & O_ACCMODE) != O_RDONLY) return (void)fuse_reply_err(req, EROFS);
    s.NoteAccess(ino);
    auto h = std::make_unique<FileHandle>();
    h->ino = ino;
    const std::string path = s.Table().ContentPath(ino);
    // Complete files go through kernel passthrough when it was negotiated (see passthrough.h).
    int32_t backing = 0;
    bool firstFailure = false;
    int registerErr = 0;
    h->mode = (in->mode & S_IFMT) == S_IFREG
                  ? s.Pt().ModeFor(s.DevFd(), ino, path, &backing, &firstFailure, &registerErr)
                  : Passthrough::Mode::kCached;
    if (firstFailure) s.NotePassthroughOff(s.Pt().OffReason());
    if (registerErr != 0) s.NoteNativeError(ino, kCauseBackingOpen, registerErr);
    const bool pass = h->mode == Passthrough::Mode::kPassthrough;
    if (!pass && !path.empty()) {
      h->fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      // Reads fall back to a parked read (JS may still provide it), but a vanished content file of
      // a complete inode is worth a diagnostic.
      if (h->fd < 0) s.NoteNativeError(ino, kCauseContentOpen, errno);
    }
    // Complete files keep their page cache across opens (content is immutable). Passthrough opens
    // must not: the kernel refuses open flags outside FOPEN_PASSTHROUGH_MASK (keep_cache is one).
    fi->keep_cache = !pass && (h->fd >= 0 || in->size == 0);
    fi->fh = s.NewHandle(ino, h->mode);  // a slot index (takeover-safe), never a pointer
    if (FileHandle* slot = s.FindHandle(fi->fh)) slot->fd = h->fd.exchange(-1);
    if (pass) {
      s.Counters().passthroughOpens++;
      Passthrough::MarkNextOpen(backing);
    }
    const int rc = fuse_reply_open(req, fi);
    Passthrough::ClearNextOpen();
    if (rc != 0 && pass) {
      s.Counters().failed++;
      s.NoteNativeError(ino, kCausePassthroughOpen, -rc);
    }
    if (rc != 0) {
      s.DropHandle(fi->fh);
      if ((in->mode & S_IFMT) == S_IFREG) s.Pt().Released(ino, h->mode);  // no RELEASE will come
    }
  });
}

void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // A predecessor's handle (takeover) is released by inode and the mode its handle encodes.
  const Passthrough::Mode mode = S(req).DropHandle(fi->fh);
  const Inode* in = S(req).Table().Get(ino);
  if (in != nullptr && (in->mode & S_IFMT) == S_IFREG) S(req).Pt().Released(ino, mode);
  fuse_reply_err(req, 0);
}

// Present bytes are pread from the content file; absent ones are parked (never waited for here).
void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Guard(req, [&] {
    Session& s = S(req);
    s.Counters().reads++;
    const Inode* in = s.Table().Get(ino);
    FileHandle* h = s.FindHandle(fi->fh);
    FileHandle foreign;  // a predecessor's open (takeover): served by inode, content reopened per read
    if (h == nullptr) h = &foreign;
    if (in == nullptr || off < 0) return (void)fuse_reply_err(req, EINVAL);
    if (uint64_t(off) >= in->size) return (void)fuse_reply_buf(req, nullptr, 0);
    const size_t want = size_t(std::min<uint64_t>(size, in->size - uint64_t(off)));
    int fd = h->fd.load();
    if (fd < 0) {
      // The file may have completed since open (markPresent).
      const std::string path = s.Table().ContentPath(ino);
      if (!path.empty()) {
        const int nfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (nfd < 0) s.NoteNativeError(ino, kCauseContentOpen, errno);
        int expected = -1;
        if (nfd >= 0 && !h->fd.compare_exchange_strong(expected, nfd)) {
          close(nfd);
          fd = expected;
        } else {
          fd = nfd;
        }
      }
    }
    if (fd < 0) return s.Park(req, ino, uint64_t(off), uint32_t(want));
    thread_local std::vector<char> buf;
    if (buf.size() < want) buf.resize(want);
    size_t got = 0;
    while (got < want) {
      const ssize_t r = pread(fd, buf.data() + got, want - got, off + off_t(got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && got == 0) {
        s.NoteNativeError(ino, kCauseContentRead, errno);
        s.Counters().failed++;
        return (void)fuse_reply_err(req, EIO);
      }
      if (r <= 0) {
        s.NoteNativeError(ino, kCauseContentRead, r < 0 ? errno : 0);  // want is clamped to the size
        break;
      }
      got += size_t(r);
    }
    s.Counters().readBytes += got;
    fuse_reply_buf(req, buf.data(), got);
  });
}

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guard(req, [&] {
    Session& s = S(req);
    const Inode* in = s.Table().Get(ino);
    if (in == nullptr) return (void)fuse_reply_err(req, ENOENT);
    if ((in->mode & S_IFMT) != S_IFDIR) return (void)fuse_reply_err(req, ENOTDIR);
    s.NoteAccess(ino);
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  });
}

void ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

// Offsets: 0 -> ".", 1 -> "..", 2 + i -> child i; each entry carries the offset of the next one.
void DoReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus) {
  Guard(req, [&] {
    Session& s = S(req);
    s.Counters().readdirs++;
    const InodeTable& t = s.Table();
    const Inode* dir = t.Get(ino);
    if (dir == nullptr || (dir->mode & S_IFMT) != S_IFDIR) return (void)fuse_reply_err(req, ENOTDIR);
    std::vector<char> buf(size);
    size_t used = 0;
    const uint64_t total = uint64_t(dir->childCount) + 2;
    std::string name;
    for (uint64_t i = off < 0 ? 0 : uint64_t(off); i < total; i++) {
      uint64_t child;
      if (i == 0) {
        name = ".";
        child = ino;
      } else if (i == 1) {
        name = "..";
        child = dir->parent;
      } else {
        const Dirent* d = t.Child(*dir, uint32_t(i - 2));
        name.assign(t.Str(d->name));
        child = d->ino;
      }
      size_t n;
      if (plus) {
        fuse_entry_param e;
        FillEntry(s, child, &e);
        n = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e, off_t(i + 1));
      } else {
        struct stat st;
        t.FillStat(child, *t.Get(child), &st);
        n = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st, off_t(i + 1));
      }
      if (n > size - used) break;
      used += n;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  DoReadDir(req, ino, size, off, false);
}
void ReadDirPlus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  DoReadDir(req, ino, size, off, true);
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  Guard(req, [&] {
    const InodeTable& t = S(req).Table();
    struct statvfs st;
    std::memset(&st, 0, sizeof(st));
    st.f_bsize = 4096;
    st.f_frsize = 4096;
    st.f_blocks = (t.TotalBytes() + 4095) / 4096;
    st.f_files = t.Count();
    st.f_namemax = 255;
    st.f_flag = ST_RDONLY;
    fuse_reply_statfs(req, &st);
  });
}

void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guard(req, [&] {
    const InodeTable& t = S(req).Table();
    const Inode* in = t.Get(ino);
    if (in == nullptr) return (void)fuse_reply_err(req, ENOENT);
    const Xattr* x = t.FindXattr(*in, name);
    if (x == nullptr) return (void)fuse_reply_err(req, ENODATA);
    if (size == 0) return (void)fuse_reply_xattr(req, x->value.len);
    if (size < x->value.len) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, t.Str(x->value).data(), x->value.len);
  });
}

void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guard(req, [&] {
    const InodeTable& t = S(req).Table();
    const Inode* in = t.Get(ino);
    if (in == nullptr) return (void)fuse_reply_err(req, ENOENT);
    std::string names;
    for (uint32_t i = 0; i < in->xattrCount; i++) {
      names.append(t.Str(t.XattrAt(*in, i)->name));
      names.push_back('\0');
    }
    if (size == 0) return (void)fuse_reply_xattr(req, names.size());
    if (size < names.size()) return (void)fuse_reply_err(req, ERANGE);
    fuse_reply_buf(req, names.data(), names.size());
  });
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = Init;
  ops.lookup = Lookup;
  ops.forget = Forget;
  ops.forget_multi = ForgetMulti;
  ops.getattr = GetAttr;
  ops.readlink = ReadLink;
  ops.open = Open;
  ops.read = Read;
  ops.release = Release;
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;
  ops.readdirplus = ReadDirPlus;
  ops.releasedir = ReleaseDir;
  ops.statfs = StatFs;
  ops.getxattr = GetXattr;
  ops.listxattr = ListXattr;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& LowLevelOps() {
  static const fuse_lowlevel_ops ops = MakeOps();
  return ops;
}

}  // namespace starlight
