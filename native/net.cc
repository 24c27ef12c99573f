// N-API surface of the socket-option addon (build/Release/starlight_net.node). Kept apart from the
// FUSE addon so that a proxy host needs no libfuse. Node has no setsockopt for TCP sockets; the
// proxy bounds the bytes queued in the kernel in front of a reprioritised frame with it (issue 11).
// Exports (the complete list):
//   setSocketOption(fd, option, value) -> void: setsockopt(2) of one int option on a TCP socket fd;
//     errors throw Error with .code = errno name (EBADF, ENOTSOCK, EINVAL…)
//   getSocketOption(fd, option) -> number
//   SO_SNDBUF, SO_RCVBUF, TCP_NOTSENT_LOWAT: the `option` values accepted (nothing else is)
#include <napi.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace {

enum Option { kSndBuf = 1, kRcvBuf = 2, kNotSentLowat = 3 };

// The (level, name) pair of an exported option, or false for anything else.
bool Resolve(int option, int* level, int* name) {
  switch (option) {
    case kSndBuf: *level = SOL_SOCKET; *name = SO_SNDBUF; return true;
    case kRcvBuf: *level = SOL_SOCKET; *name = SO_RCVBUF; return true;
    case kNotSentLowat: *level = IPPROTO_TCP; *name = TCP_NOTSENT_LOWAT; return true;
    default: return false;
  }
}

Napi::Error ErrnoError(Napi::Env env, const char* what, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(what) + ": " + strerror(err));
  const char* name = err == EBADF ? "EBADF" : err == ENOTSOCK ? "ENOTSOCK" : err == EINVAL ? "EINVAL" : err == ENOPROTOOPT ? "ENOPROTOOPT" : "EIO";
  e.Set("code", Napi::String::New(env, name));
  e.Set("errno", Napi::Number::New(env, err));
  return e;
}

void Args(const Napi::CallbackInfo& info, size_t n, int* fd, int* level, int* name) {
  for (size_t i = 0; i < n; i++)
    if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "setSocketOption(fd, option, value) / getSocketOption(fd, option): numbers");
  *fd = info[0].As<Napi::Number>().Int32Value();
  if (*fd < 0) throw Napi::TypeError::New(info.Env(), "fd must be >= 0");
  if (!Resolve(info[1].As<Napi::Number>().Int32Value(), level, name)) throw Napi::TypeError::New(info.Env(), "option must be SO_SNDBUF, SO_RCVBUF or TCP_NOTSENT_LOWAT");
}

Napi::Value SetSocketOption(const Napi::CallbackInfo& info) {
  int fd, level, name;
  Args(info, 3, &fd, &level, &name);
  const int64_t v = info[2].As<Napi::Number>().Int64Value();
  if (v < 0 || v > (1 << 30)) throw Napi::TypeError::New(info.Env(), "value must be within 0..2^30");
  const int value = int(v);
  if (setsockopt(fd, level, name, &value, sizeof value) != 0) throw ErrnoError(info.Env(), "setsockopt", errno);
  return info.Env().Undefined();
}

Napi::Value GetSocketOption(const Napi::CallbackInfo& info) {
  int fd, level, name;
  Args(info, 2, &fd, &level, &name);
  int value = 0;
  socklen_t len = sizeof value;
  if (getsockopt(fd, level, name, &value, &len) != 0) throw ErrnoError(info.Env(), "getsockopt", errno);
  return Napi::Number::New(info.Env(), value);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("setSocketOption", Napi::Function::New(env, SetSocketOption, "setSocketOption"));
  exports.Set("getSocketOption", Napi::Function::New(env, GetSocketOption, "getSocketOption"));
  exports.Set("SO_SNDBUF", Napi::Number::New(env, kSndBuf));
  exports.Set("SO_RCVBUF", Napi::Number::New(env, kRcvBuf));
  exports.Set("TCP_NOTSENT_LOWAT", Napi::Number::New(env, kNotSentLowat));
  return exports;
}

}  // namespace

NODE_API_MODULE(starlight_net, Init)
