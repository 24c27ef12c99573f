// N-API surface of the blob-file addon (build/Release/starlight_blob.node): one call per small content
// of the worker's CAS instead of four fs calls (issue 18). No libfuse; loaded by the item-pool threads.
// Exports (the complete list):
//   createBlob(path, data, stamps, index) -> number: creates `path` exclusively, read-only (0444;
//     the fd may write), writes all of `data` (Uint8Array), fstat()s it and closes it; the file's
//     inode goes to stamps[2*index] and its ctime in ns to stamps[2*index+1] (BigUint64Array: the CAS
//     durable log's record). A leftover at `path` (EEXIST) is unlinked and the create tried once more.
//     Returns 0, or the errno of the step that failed; after a failed write/fstat/close the file is
//     unlinked (nothing half-written stays at a blob path). Bad arguments throw TypeError.
//   syncfs(path, callback(errno)) -> undefined: syncfs(2) of the file system holding `path` (a dir
//     or a file, as `sync -f`), on the libuv pool; callback(0), or the errno of the open or the
//     syncfs that failed. Why: Node has no binding, and spawning coreutils `sync -f` forks the daemon
//     (its page tables) on the main thread once per pull (issue 19). Bad arguments throw TypeError.
#include <napi.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <utility>

namespace {

int CreateOnce(const char* path) {
  int fd;
  do fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
  while (fd < 0 && errno == EINTR);
  return fd;
}

// Writes, stats and closes fd; returns 0 or the errno of the first failure (fd closed either way).
int Fill(int fd, const uint8_t* data, size_t len, struct stat* st) {
  size_t off = 0;
  int err = 0;
  while (off < len) {
    const ssize_t n = write(fd, data + off, len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    off += size_t(n);
  }
  if (err == 0 && fstat(fd, st) != 0) err = errno;
  // close(2) is not retried on EINTR (Linux releases the fd first); an error there is an I/O error.
  if (close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
  return err;
}

Napi::Value CreateBlob(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsNumber())
    throw Napi::TypeError::New(env, "createBlob(path: string, data: Uint8Array, stamps: BigUint64Array, index: number)");
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  Napi::TypedArray data = info[1].As<Napi::TypedArray>();
  Napi::TypedArray stamps = info[2].As<Napi::TypedArray>();
  if (data.TypedArrayType() != napi_uint8_array) throw Napi::TypeError::New(env, "data must be a Uint8Array");
  if (stamps.TypedArrayType() != napi_biguint64_array) throw Napi::TypeError::New(env, "stamps must be a BigUint64Array");
  const int64_t index = info[3].As<Napi::Number>().Int64Value();
  if (index < 0 || size_t(2 * index + 1) >= stamps.ElementLength()) throw Napi::TypeError::New(env, "index out of the stamps' range");
  const auto* bytes = static_cast<const uint8_t*>(data.ArrayBuffer().Data()) + data.ByteOffset();
  auto* out = reinterpret_cast<uint64_t*>(static_cast<uint8_t*>(stamps.ArrayBuffer().Data()) + stamps.ByteOffset());

  int fd = CreateOnce(path.c_str());
  if (fd < 0 && errno == EEXIST) {
    // Not committed (the tracker writes only absent digests): a leftover, replaced.
    if (unlink(path.c_str()) != 0 && errno != ENOENT) return Napi::Number::New(env, errno);
    fd = CreateOnce(path.c_str());
  }
  if (fd < 0) return Napi::Number::New(env, errno);
  struct stat st;
  const int err = Fill(fd, bytes, data.ByteLength(), &st);
  if (err != 0) {
    unlink(path.c_str());
    return Napi::Number::New(env, err);
  }
  out[2 * index] = uint64_t(st.st_ino);
  out[2 * index + 1] = uint64_t(st.st_ctim.tv_sec) * 1000000000ull + uint64_t(st.st_ctim.tv_nsec);
  return Napi::Number::New(env, 0);
}

// syncfs(2) of the file system holding `path_`, off the JS thread.
class SyncfsWorker : public Napi::AsyncWorker {
 public:
  SyncfsWorker(Napi::Function& callback, std::string path) : Napi::AsyncWorker(callback), path_(std::move(path)) {}

  void Execute() override {
    int fd;
    do fd = open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
      err_ = errno;
      return;
    }
    if (syncfs(fd) != 0) err_ = errno;
    close(fd);
  }

  void OnOK() override { Callback().Call({Napi::Number::New(Env(), err_)}); }

 private:
  const std::string path_;
  int err_ = 0;
};

Napi::Value Syncfs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsFunction()) throw Napi::TypeError::New(env, "syncfs(path: string, callback: (errno: number) => void)");
  Napi::Function callback = info[1].As<Napi::Function>();
  (new SyncfsWorker(callback, info[0].As<Napi::String>().Utf8Value()))->Queue();
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("createBlob", Napi::Function::New(env, CreateBlob, "createBlob"));
  exports.Set("syncfs", Napi::Function::New(env, Syncfs, "syncfs"));
  return exports;
}

}  // namespace

NODE_API_MODULE(starlight_blob, Init)
