// Messages with file descriptors over a unix SOCK_SEQPACKET socket (SCM_RIGHTS): the only way the fd
// holder (holder.cc) and the daemon (addon.cc) exchange /dev/fuse and state fds. One message is one
// text of at most kMaxMessage bytes plus at most kMaxFds descriptors; anything larger is refused, a
// truncated message (MSG_TRUNC / MSG_CTRUNC) is an error and its fds are closed.
//
// Not here: what the texts mean (holder.cc documents the protocol), N-API (addon.cc).
#pragma once

#include <string>
#include <vector>

namespace starlight {

constexpr size_t kMaxMessage = 4096;
constexpr size_t kMaxFds = 8;

// Connects to `path` (SOCK_SEQPACKET, CLOEXEC); returns the fd or -errno.
int FdConnect(const std::string& path);
// Sends `text` with `fds` (duplicated into the receiver); 0 or -errno.
int FdSend(int sock, const std::string& text, const std::vector<int>& fds);
// Receives one message within `timeoutMs` (< 0: wait forever); received fds are CLOEXEC and owned by
// the caller. 0, -ETIMEDOUT, -ECONNRESET (peer closed) or -errno.
int FdRecv(int sock, int timeoutMs, std::string* text, std::vector<int>* fds);

}  // namespace starlight
