// N-API surface of the FUSE addon. Exports (the complete list):
//   mount(mountpoint, options, table, onEvent) -> handle (number)
//   provide(handle, reqId, path | null, errno?) -> boolean (false: request no longer parked)
//   markPresent(handle, ino, path) -> boolean
//   unmount(handle) -> void (idempotent)
//   alive(handle) -> boolean
//   stats(handle) -> object of counters
//   adopt(devFd, stateFd, mountpoint, options, table, onEvent) -> handle (takes both fds, see session.h)
//   detach(handle) -> void (stop serving, keep the mount; idempotent)
//   setHeld(handle, held) -> void (held: process exit detaches instead of unmounting)
//   viewFds(handle) -> [devFd, stateFd] (still owned by the session; send, never close)
//   holderConnect(path) -> fd; holderRequest(fd, text, fds, timeoutMs) -> { text, fds };
//   closeFd(fd) (fd_passing.h; errors throw Error with .code = errno name)
//   EVENT_READ, EVENT_INTERRUPT, EVENT_ACCESS, EVENT_PASSTHROUGH_OFF, EVENT_NATIVE_ERROR,
//   CAUSE_CONTENT_OPEN, CAUSE_CONTENT_READ, CAUSE_PASSTHROUGH_OPEN, CAUSE_BACKING_OPEN, CAUSE_SERVE,
//   INODE_RECORD_SIZE, DIRENT_RECORD_SIZE, XATTR_RECORD_SIZE
// Sessions live in per-environment instance data; an env cleanup hook unmounts every live session
// when the Node environment exits. Argument errors throw TypeError on the JS thread only.
#include <napi.h>

#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>

#include "fd_passing.h"
#include "session.h"

namespace starlight {
namespace {

struct AddonData {
  std::map<uint32_t, std::unique_ptr<Session>> sessions;
  uint32_t nextHandle = 1;
  void UnmountAll() {
    for (auto& [h, s] : sessions) s->AtExit();
    sessions.clear();
  }
  ~AddonData() { UnmountAll(); }
};

void CleanupHook(void* arg) { static_cast<AddonData*>(arg)->UnmountAll(); }

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Session& Get(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "handle must be a number");
  AddonData& d = Data(info.Env());
  auto it = d.sessions.find(info[0].As<Napi::Number>().Uint32Value());
  if (it == d.sessions.end()) throw Napi::Error::New(info.Env(), "unknown or unmounted FUSE session handle");
  return *it->second;
}

Napi::Buffer<uint8_t> BufferField(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsBuffer()) throw Napi::TypeError::New(o.Env(), std::string("table.") + name + " must be a Buffer");
  return v.As<Napi::Buffer<uint8_t>>();
}

MountOptions ParseOptions(Napi::Object o) {
  MountOptions m;
  const auto str = [&](const char* k, std::string* out) {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined()) return;
    if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string("options.") + k + " must be a string");
    *out = v.As<Napi::String>().Utf8Value();
    if (out->empty() || out->find_first_of(",=\\ ") != std::string::npos)
      throw Napi::TypeError::New(o.Env(), std::string("options.") + k + " must be a plain word");
  };
  str("fsname", &m.fsname);
  str("subtype", &m.subtype);
  Napi::Value threads = o.Get("threads");
  if (threads.IsNumber()) m.threads = threads.As<Napi::Number>().Uint32Value();
  if (m.threads < 1 || m.threads > 64) throw Napi::RangeError::New(o.Env(), "options.threads must be 1..64");
  Napi::Value bg = o.Get("maxBackground");
  if (bg.IsNumber()) m.maxBackground = bg.As<Napi::Number>().Uint32Value();
  if (m.maxBackground < 12 || m.maxBackground > 65535)
    throw Napi::RangeError::New(o.Env(), "options.maxBackground must be 12..65535");
  Napi::Value to = o.Get("timeoutSec");
  if (to.IsNumber()) m.timeoutSec = to.As<Napi::Number>().DoubleValue();
  if (!(m.timeoutSec >= 0 && m.timeoutSec <= 86400 * 365))
    throw Napi::RangeError::New(o.Env(), "options.timeoutSec out of range");
  m.trace = o.Get("trace").ToBoolean().Value();
  Napi::Value pt = o.Get("passthrough");
  if (!pt.IsUndefined()) m.passthrough = pt.ToBoolean().Value();
  return m;
}

std::unique_ptr<InodeTable> ParseTable(Napi::Object t) {
  auto inodes = BufferField(t, "inodes"), dirents = BufferField(t, "dirents"),
       xattrs = BufferField(t, "xattrs"), strings = BufferField(t, "strings");
  auto table = std::make_unique<InodeTable>();
  std::string error;
  if (!table->Decode(inodes.Data(), inodes.Length(), dirents.Data(), dirents.Length(), xattrs.Data(),
                     xattrs.Length(), strings.Data(), strings.Length(), &error))
    throw Napi::TypeError::New(t.Env(), "bad inode table: " + error);
  return table;
}

uint32_t Register(Napi::Env env, std::unique_ptr<Session> session) {
  AddonData& d = Data(env);
  const uint32_t handle = d.nextHandle++;
  d.sessions.emplace(handle, std::move(session));
  return handle;
}

// Builds a session from info[at] (options), info[at + 1] (table), info[at + 2] (onEvent), starts it
// with `start` and registers it; throws "<what>: <error>" when it does not start.
template <typename StartFn>
Napi::Value StartSession(const Napi::CallbackInfo& info, size_t at, const std::string& what, StartFn start) {
  Napi::Env env = info.Env();
  MountOptions opts = ParseOptions(info[at].As<Napi::Object>());
  auto session = std::make_unique<Session>(ParseTable(info[at + 1].As<Napi::Object>()), std::move(opts));
  EventFn events = EventFn::New(env, info[at + 2].As<Napi::Function>(), "starlight-fuse-events", 0, 1, nullptr);
  events.Unref(env);  // a mounted view alone does not keep the process alive
  std::string error;
  if (!start(*session, events, &error)) {
    events.Release();
    throw Napi::Error::New(env, what + ": " + error);
  }
  return Napi::Number::New(env, Register(env, std::move(session)));
}

Napi::Value Mount(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsObject() ||
      !info[3].IsFunction())
    throw Napi::TypeError::New(env, "mount(mountpoint: string, options: object, table: object, onEvent: function)");
  const std::string mountpoint = info[0].As<Napi::String>().Utf8Value();
  return StartSession(info, 1, "mount " + mountpoint, [&](Session& s, EventFn events, std::string* error) {
    return s.Start(mountpoint, events, error);
  });
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a file descriptor");
  const int64_t fd = info[i].As<Napi::Number>().Int64Value();
  if (fd < 0 || fd > 1 << 30) throw Napi::RangeError::New(info.Env(), std::string(name) + " is not a file descriptor");
  return int(fd);
}

Napi::Value Adopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6 || !info[2].IsString() || !info[3].IsObject() || !info[4].IsObject() || !info[5].IsFunction())
    throw Napi::TypeError::New(env, "adopt(devFd, stateFd, mountpoint: string, options: object, table: object, onEvent: function)");
  const int devFd = FdArg(info, 0, "devFd"), stateFd = FdArg(info, 1, "stateFd");
  const std::string mountpoint = info[2].As<Napi::String>().Utf8Value();
  bool handed = false;  // Session::Adopt owns the fds from its call on, also when it fails
  try {
    return StartSession(info, 3, "adopt " + mountpoint, [&](Session& s, EventFn events, std::string* error) {
      handed = true;
      return s.Adopt(devFd, stateFd, mountpoint, events, error);
    });
  } catch (...) {
    if (!handed) {
      close(devFd);
      close(stateFd);
    }
    throw;
  }
}

// Removes the session of handle info[0] from the table and hands it over (null: unknown handle, a
// no-op for Detach/Unmount, which are idempotent).
std::unique_ptr<Session> TakeSession(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "handle must be a number");
  AddonData& d = Data(info.Env());
  auto it = d.sessions.find(info[0].As<Napi::Number>().Uint32Value());
  if (it == d.sessions.end()) return nullptr;
  std::unique_ptr<Session> s = std::move(it->second);
  d.sessions.erase(it);
  return s;
}

Napi::Value Detach(const Napi::CallbackInfo& info) {
  if (std::unique_ptr<Session> s = TakeSession(info)) s->Detach();
  return info.Env().Undefined();
}

Napi::Value SetHeld(const Napi::CallbackInfo& info) {
  Get(info).SetHeld(info.Length() > 1 && info[1].ToBoolean().Value());
  return info.Env().Undefined();
}

Napi::Value ViewFds(const Napi::CallbackInfo& info) {
  Session& s = Get(info);
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(uint32_t(0), Napi::Number::New(info.Env(), s.DevFd()));
  a.Set(uint32_t(1), Napi::Number::New(info.Env(), s.Pt().StateFd()));
  return a;
}

[[noreturn]] void ThrowErrno(Napi::Env env, const std::string& what, int err) {
  Napi::Error e = Napi::Error::New(env, what + ": " + std::strerror(err));
  const char* name = err == ENOENT ? "ENOENT" : err == ECONNREFUSED ? "ECONNREFUSED" : err == ETIMEDOUT ? "ETIMEDOUT"
                     : err == ECONNRESET ? "ECONNRESET" : "EIO";
  e.Set("code", Napi::String::New(env, name));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

Napi::Value HolderConnect(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "holderConnect(path: string)");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const int fd = FdConnect(path);
  if (fd < 0) ThrowErrno(info.Env(), "connect " + path, -fd);
  return Napi::Number::New(info.Env(), fd);
}

Napi::Value HolderRequest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[1].IsString() || !info[2].IsArray() || !info[3].IsNumber())
    throw Napi::TypeError::New(env, "holderRequest(fd, text: string, fds: number[], timeoutMs: number)");
  const int sock = FdArg(info, 0, "fd");
  const std::string text = info[1].As<Napi::String>().Utf8Value();
  Napi::Array arr = info[2].As<Napi::Array>();
  if (arr.Length() > kMaxFds) throw Napi::RangeError::New(env, "too many fds");
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0) throw Napi::TypeError::New(env, "fds must be file descriptors");
    fds.push_back(v.As<Napi::Number>().Int32Value());
  }
  int rc = FdSend(sock, text, fds);
  if (rc != 0) ThrowErrno(env, "send to the fd holder", -rc);
  std::string reply;
  std::vector<int> got;
  rc = FdRecv(sock, info[3].As<Napi::Number>().Int32Value(), &reply, &got);
  if (rc != 0) ThrowErrno(env, "receive from the fd holder", -rc);
  Napi::Object o = Napi::Object::New(env);
  o.Set("text", Napi::String::New(env, reply));
  Napi::Array out = Napi::Array::New(env, got.size());
  for (uint32_t i = 0; i < got.size(); i++) out.Set(i, Napi::Number::New(env, got[i]));
  o.Set("fds", out);
  return o;
}

Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close(FdArg(info, 0, "fd"));
  return info.Env().Undefined();
}

Napi::Value Provide(const Napi::CallbackInfo& info) {
  Session& s = Get(info);
  if (info.Length() < 3 || !info[1].IsNumber() || !(info[2].IsString() || info[2].IsNull()))
    throw Napi::TypeError::New(info.Env(), "provide(handle, reqId: number, path: string | null, errno?: number)");
  const int64_t id = info[1].As<Napi::Number>().Int64Value();
  const std::string path = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : std::string();
  int err = 0;
  if (info.Length() > 3 && info[3].IsNumber()) err = info[3].As<Napi::Number>().Int32Value();
  if (info[2].IsString() && path.empty()) throw Napi::TypeError::New(info.Env(), "path must not be empty");
  return Napi::Boolean::New(info.Env(), id > 0 && s.Provide(uint64_t(id), path, err));
}

Napi::Value MarkPresent(const Napi::CallbackInfo& info) {
  Session& s = Get(info);
  if (info.Length() < 3 || !info[1].IsNumber() || !info[2].IsString())
    throw Napi::TypeError::New(info.Env(), "markPresent(handle, ino: number, path: string)");
  const int64_t ino = info[1].As<Napi::Number>().Int64Value();
  std::string path = info[2].As<Napi::String>().Utf8Value();
  return Napi::Boolean::New(info.Env(), ino > 0 && !path.empty() && s.MarkPresent(uint64_t(ino), std::move(path)));
}

Napi::Value Unmount(const Napi::CallbackInfo& info) {
  if (std::unique_ptr<Session> s = TakeSession(info)) s->Unmount();
  return info.Env().Undefined();
}

Napi::Value Alive(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "handle must be a number");
  AddonData& d = Data(info.Env());
  auto it = d.sessions.find(info[0].As<Napi::Number>().Uint32Value());
  return Napi::Boolean::New(info.Env(), it != d.sessions.end() && it->second->Alive());
}

Napi::Value StatsOf(const Napi::CallbackInfo& info) {
  Session& s = Get(info);
  Stats& c = s.Counters();
  Napi::Object o = Napi::Object::New(info.Env());
  const auto put = [&](const char* k, uint64_t v) { o.Set(k, Napi::Number::New(info.Env(), double(v))); };
  put("lookups", c.lookups);
  put("getattrs", c.getattrs);
  put("readdirs", c.readdirs);
  put("opens", c.opens);
  put("reads", c.reads);
  put("readBytes", c.readBytes);
  put("parked", c.parked);
  put("provided", c.provided);
  put("failed", c.failed);
  put("failedProvider", c.failedProvider);
  put("failedUnmount", c.failedUnmount);
  put("failedContentOpen", c.nativeErrors[kCauseContentOpen]);
  put("failedContentRead", c.nativeErrors[kCauseContentRead]);
  put("failedPassthroughOpen", c.nativeErrors[kCausePassthroughOpen]);
  put("failedBackingOpen", c.nativeErrors[kCauseBackingOpen]);
  put("failedServe", c.nativeErrors[kCauseServe]);
  put("nativeErrorsDropped", c.nativeErrorsDropped);
  put("interrupts", c.interrupts);
  put("passthroughOpens", c.passthroughOpens);
  put("passthrough", s.Pt().Negotiated() ? 1 : 0);
  put("passthroughOff", uint64_t(s.Pt().OffReason()));
  put("parkedNow", s.ParkedNow());
  put("inodes", s.Table().Count());
  o.Set("resend", Napi::Number::New(info.Env(), s.ResendResult()));
  put("epoch", s.Pt().Epoch());
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  napi_add_env_cleanup_hook(env, CleanupHook, data);
  exports.Set("mount", Napi::Function::New(env, Mount, "mount"));
  exports.Set("provide", Napi::Function::New(env, Provide, "provide"));
  exports.Set("markPresent", Napi::Function::New(env, MarkPresent, "markPresent"));
  exports.Set("unmount", Napi::Function::New(env, Unmount, "unmount"));
  exports.Set("alive", Napi::Function::New(env, Alive, "alive"));
  exports.Set("stats", Napi::Function::New(env, StatsOf, "stats"));
  exports.Set("adopt", Napi::Function::New(env, Adopt, "adopt"));
  exports.Set("detach", Napi::Function::New(env, Detach, "detach"));
  exports.Set("setHeld", Napi::Function::New(env, SetHeld, "setHeld"));
  exports.Set("viewFds", Napi::Function::New(env, ViewFds, "viewFds"));
  exports.Set("holderConnect", Napi::Function::New(env, HolderConnect, "holderConnect"));
  exports.Set("holderRequest", Napi::Function::New(env, HolderRequest, "holderRequest"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("EVENT_READ", Napi::Number::New(env, kEventRead));
  exports.Set("EVENT_INTERRUPT", Napi::Number::New(env, kEventInterrupt));
  exports.Set("EVENT_ACCESS", Napi::Number::New(env, kEventAccess));
  exports.Set("EVENT_PASSTHROUGH_OFF", Napi::Number::New(env, kEventPassthroughOff));
  exports.Set("EVENT_NATIVE_ERROR", Napi::Number::New(env, kEventNativeError));
  exports.Set("CAUSE_CONTENT_OPEN", Napi::Number::New(env, kCauseContentOpen));
  exports.Set("CAUSE_CONTENT_READ", Napi::Number::New(env, kCauseContentRead));
  exports.Set("CAUSE_PASSTHROUGH_OPEN", Napi::Number::New(env, kCausePassthroughOpen));
  exports.Set("CAUSE_BACKING_OPEN", Napi::Number::New(env, kCauseBackingOpen));
  exports.Set("CAUSE_SERVE", Napi::Number::New(env, kCauseServe));
  exports.Set("INODE_RECORD_SIZE", Napi::Number::New(env, double(kInodeRecordSize)));
  exports.Set("DIRENT_RECORD_SIZE", Napi::Number::New(env, double(kDirentRecordSize)));
  exports.Set("XATTR_RECORD_SIZE", Napi::Number::New(env, double(kXattrRecordSize)));
  return exports;
}

}  // namespace
}  // namespace starlight

static Napi::Object InitStarlightFuse(Napi::Env env, Napi::Object exports) {
  return starlight::Init(env, exports);
}

NODE_API_MODULE(starlight_fuse, InitStarlightFuse)
