// Raw writes of a bare fuse_out_header to /dev/fuse, for the two places that answer or notify the
// kernel outside libfuse: the takeover (session.cc: FUSE_NOTIFY_RESEND, EIO for a predecessor's
// parked reads) and the fd holder (holder.cc: the same while no daemon runs). Layout from
// include/uapi/linux/fuse.h (struct fuse_out_header).
#pragma once

#include <errno.h>
#include <unistd.h>

#include <cstdint>

namespace starlight {

// FUSE_NOTIFY_RESEND (protocol 7.40, Linux 6.9): requeue every request read but not answered.
constexpr int32_t kNotifyResend = 7;

// Writes {len 16, error, unique}: a reply carrying only an error (error < 0, unique of the request),
// or a notification without payload (error = notify code, unique 0). Returns 0 or -errno.
inline int WriteOutHeader(int fd, int32_t error, uint64_t unique) {
  const struct {
    uint32_t len;
    int32_t error;
    uint64_t unique;
  } h{16, error, unique};
  return write(fd, &h, sizeof(h)) == ssize_t(sizeof(h)) ? 0 : -errno;
}

}  // namespace starlight
