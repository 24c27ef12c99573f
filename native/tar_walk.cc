// See tar_walk.h.
#include "tar_walk.h"

#include <algorithm>
#include <cstring>

namespace starlight {
namespace {

constexpr size_t kBlock = 512;
// Largest PAX or GNU long-name payload (tar.ts MAX_META_SIZE).
constexpr uint64_t kMaxMeta = 1 << 20;
// Chunk digests cover files over this size, one per this many bytes (src/layers/toc.ts CHUNK_BYTES).
constexpr uint64_t kChunk = 1 << 20;
// Sizes must stay exact as JS numbers.
constexpr uint64_t kMaxSafe = (uint64_t(1) << 53) - 1;

uint64_t Pad(uint64_t n) { return (kBlock - n % kBlock) % kBlock; }

// Octal (space/NUL padded) or GNU base-256 (high bit set); false if malformed, negative or over 2^53.
bool ParseSize(const uint8_t* b, size_t len, uint64_t* out) {
  if (b[0] & 0x80) {
    if (b[0] & 0x40) return false;  // negative
    uint64_t v = b[0] & 0x7f;
    for (size_t i = 1; i < len; i++) {
      if (v > (kMaxSafe >> 8)) return false;
      v = (v << 8) | b[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < len && (b[i] == ' ' || b[i] == 0)) i++;
  uint64_t v = 0;
  for (; i < len; i++) {
    const uint8_t c = b[i];
    if (c == ' ' || c == 0) break;
    if (c < '0' || c > '7') return false;
    if (v > (kMaxSafe >> 3)) return false;
    v = v * 8 + (c - '0');
  }
  *out = v;
  return true;
}

// The last `size` record of a PAX payload: -1 none, -2 empty value, else the value; -3 malformed.
int64_t PaxSize(const std::vector<uint8_t>& d) {
  int64_t found = -1;
  size_t pos = 0;
  while (pos < d.size()) {
    if (d[pos] == 0) break;  // NUL padding
    size_t sp = pos;
    uint64_t len = 0;
    while (sp < d.size() && d[sp] >= '0' && d[sp] <= '9') {
      len = len * 10 + (d[sp] - '0');
      if (len > d.size()) return -3;
      sp++;
    }
    if (sp == pos || sp >= d.size() || d[sp] != ' ' || len == 0 || pos + len > d.size() || d[pos + len - 1] != '\n') return -3;
    const size_t end = pos + len - 1;  // the '\n'
    const uint8_t* key = &d[sp + 1];
    const uint8_t* eq = static_cast<const uint8_t*>(std::memchr(key, '=', end - (sp + 1)));
    if (eq == nullptr) return -3;
    if (eq - key == 4 && std::memcmp(key, "size", 4) == 0) {
      const uint8_t* v = eq + 1;
      const size_t n = &d[end] - v;
      if (n == 0) {
        found = -2;
      } else {
        uint64_t x = 0;
        for (size_t i = 0; i < n; i++) {
          if (v[i] < '0' || v[i] > '9' || x > (kMaxSafe / 10)) return -3;  // also negative: refused
          x = x * 10 + (v[i] - '0');
        }
        found = int64_t(x);
      }
    }
    pos += len;
  }
  return found;
}

}  // namespace

TarWalker::TarWalker(uint64_t stageMax) : stageMax_(stageMax) {
  file_ = EVP_MD_CTX_new();
  chunk_ = EVP_MD_CTX_new();
}

TarWalker::~TarWalker() {
  EVP_MD_CTX_free(file_);
  EVP_MD_CTX_free(chunk_);
}

const char* TarWalker::Inside() const {
  switch (state_) {
    case State::kHeader: return blockFill_ == 0 ? "" : sawZero_ ? "the end-of-archive marker" : "a header";
    case State::kMeta: return "an extended header";
    case State::kData: return "data";
    case State::kPad: return "padding";
    case State::kSkip: return "a volume label";
    default: return "";
  }
}

void TarWalker::Fail(std::vector<TarEvent>* events, uint64_t at, std::string message) {
  TarEvent e{TarEvent::kError};
  e.at = at;
  e.message = std::move(message);
  events->push_back(std::move(e));
  state_ = State::kFailed;
}

void TarWalker::PadOrHeader(uint64_t size) {
  remaining_ = Pad(size);
  state_ = remaining_ > 0 ? State::kPad : State::kHeader;
}

void TarWalker::SkipOrHeader(uint64_t size) {
  remaining_ = size + Pad(size);
  state_ = remaining_ > 0 ? State::kSkip : State::kHeader;
}

bool TarWalker::StartFile(uint64_t size, std::vector<TarEvent>* events) {
  fileSize_ = size;
  fileAt_ = pos_;
  fileStaged_ = size > 0 && size <= stageMax_;
  fileStagedAt_ = fileStaged_ ? int64_t(stagedTotal_) : -1;
  chunked_ = size > kChunk;
  chunkFill_ = 0;
  chunks_.clear();
  if (file_ == nullptr || chunk_ == nullptr || EVP_DigestInit_ex(file_, EVP_sha256(), nullptr) != 1) return false;
  if (chunked_ && EVP_DigestInit_ex(chunk_, EVP_sha256(), nullptr) != 1) return false;
  remaining_ = size;
  state_ = State::kData;
  if (size == 0) return FinishFile(events);
  return true;
}

bool TarWalker::FinishChunk() {
  uint8_t md[32];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(chunk_, md, &len) != 1 || len != 32) return false;
  chunks_.insert(chunks_.end(), md, md + 32);
  chunkFill_ = 0;
  return EVP_DigestInit_ex(chunk_, EVP_sha256(), nullptr) == 1;
}

bool TarWalker::FinishFile(std::vector<TarEvent>* events) {
  TarEvent e{TarEvent::kFile};
  e.at = fileAt_;
  e.size = fileSize_;
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(file_, e.digest, &len) != 1 || len != 32) return false;
  if (chunked_ && chunkFill_ > 0 && !FinishChunk()) return false;
  e.chunks = std::move(chunks_);
  chunks_.clear();
  e.stagedAt = fileStagedAt_;
  events->push_back(std::move(e));
  PadOrHeader(fileSize_);
  return true;
}

void TarWalker::FinishMeta(std::vector<TarEvent>* events) {
  if (metaFlag_ == 'x' || metaFlag_ == 'g') {
    const int64_t s = PaxSize(meta_);
    if (s == -3) return Fail(events, metaAt_, "malformed PAX header");
    if (s != -1) (metaFlag_ == 'x' ? localSize_ : globalSize_) = s;
  }
  const uint64_t size = meta_.size();
  TarEvent e{TarEvent::kMeta};
  e.at = metaAt_;
  e.bytes = std::move(meta_);
  meta_.clear();
  events->push_back(std::move(e));
  PadOrHeader(size);
}

void TarWalker::OnHeader(std::vector<TarEvent>* events) {
  const uint64_t at = pos_ - kBlock;
  bool zero = true;
  for (size_t i = 0; i < kBlock && zero; i++) zero = block_[i] == 0;
  if (sawZero_) {
    if (!zero) return Fail(events, zeroAt_, "lone zero block");
    events->push_back(TarEvent(TarEvent::kEnd));
    state_ = State::kEnd;
    return;
  }
  if (zero) {
    sawZero_ = true;
    zeroAt_ = at;
    return;
  }
  TarEvent h{TarEvent::kHeader};
  h.at = at;
  h.bytes.assign(block_, block_ + kBlock);
  events->push_back(std::move(h));
  const char flag = char(block_[156]);
  uint64_t size = 0;
  if (!ParseSize(block_ + 124, 12, &size)) return Fail(events, at, "bad size field");
  switch (flag) {
    case 'x':
    case 'g':
    case 'L':
    case 'K':
      if (size > kMaxMeta) return Fail(events, at, "extended header too large");
      metaFlag_ = flag;
      metaAt_ = at;
      meta_.clear();
      meta_.reserve(size);
      remaining_ = size;
      state_ = State::kMeta;
      if (size == 0) FinishMeta(events);
      return;
    case 'V':
      return SkipOrHeader(size);
    default:
      break;
  }
  uint64_t dataSize = size;
  if (localSize_ >= 0) dataSize = uint64_t(localSize_);
  else if (localSize_ == -1 && globalSize_ >= 0) dataSize = uint64_t(globalSize_);
  localSize_ = -1;
  bool file = flag == '0' || flag == 0 || flag == '7';
  if (flag == 0) {
    // An old-style directory: the name (ustar prefix + '/' + name) ends in '/'.
    const size_t nameLen = strnlen(reinterpret_cast<const char*>(block_), 100);
    const bool ustar = std::memcmp(block_ + 257, "ustar\0", 6) == 0;
    const bool prefix = ustar && block_[345] != 0;
    if ((nameLen > 0 && block_[nameLen - 1] == '/') || (nameLen == 0 && prefix)) file = false;
  }
  if (flag == 'D') {
    SkipOrHeader(dataSize);
  } else if (file) {
    if (!StartFile(dataSize, events)) return Fail(events, at, "out of memory");
  } else {
    state_ = State::kHeader;
  }
}

bool TarWalker::Feed(const uint8_t* p, size_t n, std::vector<TarEvent>* events, std::vector<uint8_t>* staged) {
  while (n > 0) {
    switch (state_) {
      case State::kEnd:
      case State::kFailed:
        pos_ += n;
        return true;
      case State::kHeader: {
        const size_t take = std::min(n, kBlock - blockFill_);
        std::memcpy(block_ + blockFill_, p, take);
        blockFill_ += take;
        p += take;
        n -= take;
        pos_ += take;
        if (blockFill_ == kBlock) {
          blockFill_ = 0;
          OnHeader(events);
        }
        break;
      }
      case State::kMeta: {
        const size_t take = size_t(std::min<uint64_t>(n, remaining_));
        meta_.insert(meta_.end(), p, p + take);
        p += take;
        n -= take;
        pos_ += take;
        remaining_ -= take;
        if (remaining_ == 0) FinishMeta(events);
        break;
      }
      case State::kData: {
        const size_t take = size_t(std::min<uint64_t>(n, remaining_));
        if (EVP_DigestUpdate(file_, p, take) != 1) return false;
        if (chunked_) {
          size_t off = 0;
          while (off < take) {
            const size_t c = size_t(std::min<uint64_t>(take - off, kChunk - chunkFill_));
            if (EVP_DigestUpdate(chunk_, p + off, c) != 1) return false;
            chunkFill_ += c;
            off += c;
            if (chunkFill_ == kChunk && !FinishChunk()) return false;
          }
        }
        if (fileStaged_) {
          staged->insert(staged->end(), p, p + take);
          stagedTotal_ += take;
        }
        p += take;
        n -= take;
        pos_ += take;
        remaining_ -= take;
        if (remaining_ == 0 && !FinishFile(events)) return false;
        break;
      }
      case State::kSkip:
      case State::kPad: {
        const size_t take = size_t(std::min<uint64_t>(n, remaining_));
        p += take;
        n -= take;
        pos_ += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kHeader;
        break;
      }
    }
  }
  return true;
}

}  // namespace starlight
