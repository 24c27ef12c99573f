// N-API surface of the gzip addon (build/Release/starlight_inflate.node): a layer blob's gzip stream
// inflated with ISA-L (libisal) on the libuv pool, and the sha256 of the output (the layer's diffID)
// computed there too, so neither costs the proxy's main thread (issue 10: the first-contact index pass).
// No libfuse; the proxy loads it (src/layers/decompress.ts) and falls back to node:zlib without it.
// Exports (the complete list):
//   class GzipInflater(hash: boolean)     hash: sha256 the output (digest())
//     inflate(input: Buffer | null, maxOut: number, cb(err, out: Buffer[], state: number)): void
//       Runs on the pool: appends `input` (kept referenced until consumed) and inflates until the
//       input is used up or at least `maxOut` bytes came out (one more output block at most). `out` are
//       the new output bytes in order; `state` is 0 (wants more input) or 1 (call again with null:
//       input is left, or more output may be). Concatenated gzip members are one stream, as
//       gunzip(1) and node:zlib have it; after a member, a zero byte ends the stream (padding).
//       Corrupt data: cb gets an Error whose message says what ISA-L found. One call at a time (a
//       second throws).
//     ended(): boolean      the last member ended (its trailer was checked)
//     digest(): string      'sha256:<hex>' of all output so far (final: call once, after the end)
//   class GzipInflater(hash: boolean, stageMax: number)   the same, walking the output as a tar
//     (native/tar_walk.h; files of 1..stageMax bytes staged) instead of handing it back:
//     walk(input: Buffer | null, maxOut: number, cb(err, out: WalkOut, state: number)): void
//       like inflate(); `out` is { output: bytes inflated by this call, staged: Buffer | null (the
//       staged bytes of this call, in order), blocks: Buffer (the header blocks and payloads of
//       this call's events), events: ({ k: 0 header, at, off, len (its bytes in blocks) } |
//       { k: 1 payload of an extended header, at, off, len } | { k: 2 file, at, size,
//       digest: 'sha256:<hex>', chunks: Buffer | undefined, stagedAt: number (-1: not staged) } |
//       { k: 3 end marker, at } | { k: 4 error, at, message })[] }.
//     walkInside(): string  TarWalker::Inside(); walkPosition(): number  tar bytes walked
#include <napi.h>

#include "tar_walk.h"

#include <isa-l/igzip_lib.h>
#include <openssl/evp.h>

#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

// Output block size, bytes: the JS side parses whole blocks; 1 MiB keeps the calls few.
constexpr uint32_t kOutBlock = 1 << 20;

enum class Phase { kMember, kBetween, kDone };

const char* IsalError(int r) {
  switch (r) {
    case ISAL_INVALID_BLOCK: return "invalid deflate block";
    case ISAL_INVALID_SYMBOL: return "invalid deflate symbol";
    case ISAL_INVALID_LOOKBACK: return "invalid distance too far back";
    case ISAL_INVALID_WRAPPER: return "incorrect gzip header";
    case ISAL_UNSUPPORTED_METHOD: return "unsupported gzip compression method";
    case ISAL_INCORRECT_CHECKSUM: return "incorrect gzip checksum";
    case ISAL_NEED_DICT: return "deflate stream needs a preset dictionary";
    default: return "inflate failed";
  }
}

struct Block {
  uint8_t* data;
  size_t len;
};

// 'sha256:<hex>' of a 32-byte digest (the form of every digest the JS side compares).
std::string Sha256Digest(const uint8_t* md) {
  static const char kHex[] = "0123456789abcdef";
  std::string s = "sha256:";
  for (int i = 0; i < 32; i++) {
    s += kHex[md[i] >> 4];
    s += kHex[md[i] & 15];
  }
  return s;
}

class GzipInflater : public Napi::ObjectWrap<GzipInflater> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "GzipInflater",
                       {InstanceMethod<&GzipInflater::Inflate>("inflate"), InstanceMethod<&GzipInflater::Ended>("ended"),
                        InstanceMethod<&GzipInflater::Digest>("digest"), InstanceMethod<&GzipInflater::Walk>("walk"),
                        InstanceMethod<&GzipInflater::WalkInside>("walkInside"),
                        InstanceMethod<&GzipInflater::WalkPosition>("walkPosition")});
  }

  explicit GzipInflater(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GzipInflater>(info) {
    isal_inflate_init(&state_);
    state_.crc_flag = ISAL_GZIP;
    if (info.Length() < 1 || !info[0].IsBoolean() || (info.Length() > 1 && !info[1].IsNumber() && !info[1].IsUndefined()))
      throw Napi::TypeError::New(info.Env(), "new GzipInflater(hash: boolean, stageMax?: number)");
    if (info.Length() > 1 && info[1].IsNumber()) {
      const double stage_max = info[1].As<Napi::Number>().DoubleValue();
      if (!(stage_max >= 0)) throw Napi::TypeError::New(info.Env(), "stageMax must be a non-negative number");
      walker_ = std::make_unique<starlight::TarWalker>(stage_max >= 9007199254740991.0 ? UINT64_MAX : uint64_t(stage_max));
    }
    if (!info[0].As<Napi::Boolean>().Value()) return;
    hash_ = EVP_MD_CTX_new();
    if (hash_ == nullptr || EVP_DigestInit_ex(hash_, EVP_sha256(), nullptr) != 1)
      throw Napi::Error::New(info.Env(), "sha256 context could not be created");
  }

  ~GzipInflater() override { EVP_MD_CTX_free(hash_); }

  // Pool side of one inflate() call: fills `out`, and `error` on corrupt data. Touches no JS.
  // With a walker, the output goes through it (events, staged bytes) and is freed; `*produced` counts it.
  void Run(size_t max_out, std::vector<Block>* out, std::vector<starlight::TarEvent>* events, std::vector<uint8_t>* staged,
           size_t* produced_out, std::string* error) {
    size_t produced = 0;
    // A call stages at most what it inflates: one allocation, not a doubling per megabyte.
    if (walker_ != nullptr && walker_->Stages()) staged->reserve(max_out + kOutBlock);
    while (produced < max_out) {
      if (phase_ == Phase::kDone) {
        state_.avail_in = 0;  // after the end: not read
        return;
      }
      if (phase_ == Phase::kBetween) {
        if (state_.avail_in == 0) return;
        if (*state_.next_in == 0) {  // zero padding after the last member
          phase_ = Phase::kDone;
          continue;
        }
        uint8_t* in = state_.next_in;
        const uint32_t avail = state_.avail_in;
        isal_inflate_reset(&state_);
        state_.crc_flag = ISAL_GZIP;
        state_.next_in = in;
        state_.avail_in = avail;
        phase_ = Phase::kMember;
      }
      // A full block may leave decoded bytes inside the state: drain them even without input.
      if (state_.avail_in == 0 && !pending_) return;
      auto* block = static_cast<uint8_t*>(std::malloc(kOutBlock));
      if (block == nullptr) {
        *error = "out of memory";
        return;
      }
      state_.next_out = block;
      state_.avail_out = kOutBlock;
      const uint32_t in_before = state_.avail_in;
      const int r = isal_inflate(&state_);
      const size_t n = kOutBlock - state_.avail_out;
      if (r < 0) {
        std::free(block);
        *error = IsalError(r);
        return;
      }
      pending_ = state_.avail_out == 0;
      if (n == 0) {
        std::free(block);
      } else {
        if (hash_ != nullptr) EVP_DigestUpdate(hash_, block, n);
        produced += n;
        *produced_out = produced;
        if (walker_ != nullptr) {
          const bool ok = walker_->Feed(block, n, events, staged);
          std::free(block);
          if (!ok) {
            *error = "out of memory while walking the tar";
            return;
          }
        } else {
          // A short block gives its unused tail back (most are full).
          uint8_t* kept = n < kOutBlock / 2 ? static_cast<uint8_t*>(std::realloc(block, n)) : block;
          out->push_back({kept != nullptr ? kept : block, n});
        }
      }
      if (state_.block_state == ISAL_BLOCK_FINISH) {
        phase_ = Phase::kBetween;
        pending_ = false;
      } else if (n == 0 && state_.avail_in == in_before && in_before > 0) {
        *error = "inflate made no progress";  // not expected of ISA-L; never spin on it
        return;
      }
    }
  }

  // Main-thread side after Run: the JS buffers own the blocks.
  // 1: call again with null (input left, or a full block may have more behind it); 0: wants input.
  int StateCode() const { return phase_ != Phase::kDone && (state_.avail_in > 0 || (phase_ == Phase::kMember && pending_)) ? 1 : 0; }
  void Release() {
    input_.Reset();
    busy_ = false;
  }

 private:
  class Worker : public Napi::AsyncWorker {
   public:
    Worker(GzipInflater* owner, Napi::Object self, size_t max_out, Napi::Function cb)
        : Napi::AsyncWorker(self, cb, "starlight.gzipInflate"), owner_(owner), max_out_(max_out) {}
    ~Worker() override {
      for (auto& b : out_) std::free(b.data);
    }
    void Execute() override {
      owner_->Run(max_out_, &out_, &events_, &staged_, &produced_, &error_);
      if (!error_.empty()) SetError(error_);
    }
    void OnOK() override {
      Napi::Env env = Env();
      const int code = owner_->StateCode();
      if (owner_->walker_ != nullptr) {
        Napi::Object result = WalkResult(env);
        if (code != 1) owner_->Release();
        else owner_->busy_ = false;
        Callback().Call({env.Null(), result, Napi::Number::New(env, code)});
        return;
      }
      Napi::Array list = Napi::Array::New(env, out_.size());
      for (size_t i = 0; i < out_.size(); i++) {
        list.Set(i, Napi::Buffer<uint8_t>::New(env, out_[i].data, out_[i].len, [](Napi::Env, uint8_t* p) { std::free(p); }));
        out_[i].data = nullptr;
      }
      out_.clear();
      if (code != 1) owner_->Release();
      else owner_->busy_ = false;
      Callback().Call({env.Null(), list, Napi::Number::New(env, code)});
    }
    void OnError(const Napi::Error& e) override {
      owner_->Release();
      Callback().Call({e.Value()});
    }

   private:
    // The walk's answer (see the file header). Header blocks and payloads share one buffer; the
    // property names are made once per answer (thousands of events per call).
    Napi::Object WalkResult(Napi::Env env) {
      Napi::Object result = Napi::Object::New(env);
      result.Set("output", Napi::Number::New(env, double(produced_)));
      if (staged_.empty()) {
        result.Set("staged", env.Null());
      } else {
        auto* bytes = new std::vector<uint8_t>(std::move(staged_));
        result.Set("staged", Napi::Buffer<uint8_t>::New(env, bytes->data(), bytes->size(),
                                                         [](Napi::Env, uint8_t*, std::vector<uint8_t>* v) { delete v; }, bytes));
      }
      size_t blockBytes = 0;
      for (const auto& e : events_) blockBytes += e.bytes.size();
      Napi::Buffer<uint8_t> blocks = Napi::Buffer<uint8_t>::New(env, blockBytes);
      result.Set("blocks", blocks);
      const Napi::String kK = Napi::String::New(env, "k"), kAt = Napi::String::New(env, "at"), kOff = Napi::String::New(env, "off"),
                         kLen = Napi::String::New(env, "len"), kSize = Napi::String::New(env, "size"),
                         kDigest = Napi::String::New(env, "digest"), kChunks = Napi::String::New(env, "chunks"),
                         kStagedAt = Napi::String::New(env, "stagedAt"), kMessage = Napi::String::New(env, "message");
      Napi::Array list = Napi::Array::New(env, events_.size());
      size_t off = 0;
      for (size_t i = 0; i < events_.size(); i++) {
        starlight::TarEvent& e = events_[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set(kK, Napi::Number::New(env, int(e.kind)));
        o.Set(kAt, Napi::Number::New(env, double(e.at)));
        switch (e.kind) {
          case starlight::TarEvent::kHeader:
          case starlight::TarEvent::kMeta:
            if (!e.bytes.empty()) std::memcpy(blocks.Data() + off, e.bytes.data(), e.bytes.size());
            o.Set(kOff, Napi::Number::New(env, double(off)));
            o.Set(kLen, Napi::Number::New(env, double(e.bytes.size())));
            off += e.bytes.size();
            break;
          case starlight::TarEvent::kFile: {
            o.Set(kSize, Napi::Number::New(env, double(e.size)));
            o.Set(kDigest, Napi::String::New(env, Sha256Digest(e.digest)));
            if (!e.chunks.empty()) o.Set(kChunks, Napi::Buffer<uint8_t>::Copy(env, e.chunks.data(), e.chunks.size()));
            o.Set(kStagedAt, Napi::Number::New(env, double(e.stagedAt)));
            break;
          }
          case starlight::TarEvent::kError:
            o.Set(kMessage, Napi::String::New(env, e.message));
            break;
          default:
            break;
        }
        list.Set(i, o);
      }
      events_.clear();
      result.Set("events", list);
      return result;
    }

    GzipInflater* owner_;
    size_t max_out_;
    std::vector<Block> out_;
    std::vector<starlight::TarEvent> events_;
    std::vector<uint8_t> staged_;
    size_t produced_ = 0;
    std::string error_;
  };

  Napi::Value Inflate(const Napi::CallbackInfo& info) {
    if (walker_ != nullptr) throw Napi::Error::New(info.Env(), "GzipInflater.inflate: this inflater walks a tar (use walk)");
    return Start(info);
  }

  Napi::Value Walk(const Napi::CallbackInfo& info) {
    if (walker_ == nullptr) throw Napi::Error::New(info.Env(), "GzipInflater.walk: created without stageMax");
    return Start(info);
  }

  Napi::Value WalkInside(const Napi::CallbackInfo& info) {
    if (walker_ == nullptr || busy_) throw Napi::Error::New(info.Env(), "GzipInflater.walkInside: no walk, or a call is running");
    return Napi::String::New(info.Env(), walker_->Inside());
  }

  Napi::Value WalkPosition(const Napi::CallbackInfo& info) {
    if (walker_ == nullptr || busy_) throw Napi::Error::New(info.Env(), "GzipInflater.walkPosition: no walk, or a call is running");
    return Napi::Number::New(info.Env(), double(walker_->Position()));
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !(info[0].IsBuffer() || info[0].IsNull()) || !info[1].IsNumber() || !info[2].IsFunction())
      throw Napi::TypeError::New(env, "inflate|walk(input: Buffer | null, maxOut: number, cb: Function)");
    if (busy_) throw Napi::Error::New(env, "GzipInflater.inflate: a call is already running");
    const int64_t max_out = info[1].As<Napi::Number>().Int64Value();
    if (max_out < 1) throw Napi::TypeError::New(env, "maxOut must be positive");
    if (info[0].IsBuffer()) {
      if (StateCode() == 1) throw Napi::Error::New(env, "GzipInflater.inflate: the previous input is not consumed (pass null)");
      Napi::Buffer<uint8_t> in = info[0].As<Napi::Buffer<uint8_t>>();
      if (in.Length() > UINT32_MAX) throw Napi::RangeError::New(env, "input chunk over 4 GiB");
      input_ = Napi::Persistent(in);
      state_.next_in = in.Data();
      state_.avail_in = uint32_t(in.Length());
    }
    busy_ = true;
    (new Worker(this, info.This().As<Napi::Object>(), size_t(max_out), info[2].As<Napi::Function>()))->Queue();
    return env.Undefined();
  }

  Napi::Value Ended(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), phase_ != Phase::kMember); }

  Napi::Value Digest(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (busy_) throw Napi::Error::New(env, "GzipInflater.digest: a call is running");
    if (hash_ == nullptr) throw Napi::Error::New(env, "GzipInflater.digest: created without hash");
    if (digest_.empty()) {
      unsigned char md[EVP_MAX_MD_SIZE];
      unsigned int len = 0;
      if (EVP_DigestFinal_ex(hash_, md, &len) != 1 || len != 32) throw Napi::Error::New(env, "sha256 could not be finished");
      digest_ = Sha256Digest(md);
    }
    return Napi::String::New(env, digest_);
  }

  inflate_state state_;
  EVP_MD_CTX* hash_ = nullptr;
  std::unique_ptr<starlight::TarWalker> walker_;
  Napi::Reference<Napi::Buffer<uint8_t>> input_;
  Phase phase_ = Phase::kMember;
  bool pending_ = false;
  bool busy_ = false;
  std::string digest_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("GzipInflater", GzipInflater::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(starlight_inflate, Init)
