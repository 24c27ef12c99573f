// The framing half of a tar reader, for the proxy's native index pass (issue 10): fed the inflated
// tar in arbitrary pieces on the libuv pool, it finds the header blocks, the extended headers'
// payloads and each regular file's data, hashes every file (sha256, plus one sha256 per 1 MiB chunk
// of files over 1 MiB) and copies the data of files of 1..stageMax bytes to a staging buffer. It
// does not interpret entries: the JS side (src/layers/tar.ts TarHeaders) reads every header block
// and payload it returns by the same rules as the streaming reader, and checks that each file's size
// agrees with its own framing — any disagreement fails the layer, so a hostile tar cannot make the
// two readers see different files.
//
// Framing rules, the same as src/layers/tar.ts: blocks of 512 bytes; two zero blocks end the archive
// (then everything is ignored); 'x'/'g'/'L'/'K' carry a payload (≤ 1 MiB) of the header's size; a
// PAX `size` record ('x' for the next entry, 'g' until changed; an empty value clears) overrides the
// size of the entry it applies to; types '0', '\0' (not named like a directory), '7' carry data; 'D'
// and 'V' carry data that is skipped ('V' by its header size); other types carry none.
//
// Not here: gzip (inflate.cc), header fields other than the size, limits (the JS side).
#pragma once
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace starlight {

struct TarEvent {
  enum Kind : uint8_t { kHeader, kMeta, kFile, kEnd, kError };
  explicit TarEvent(Kind k) : kind(k) {}
  Kind kind;
  // kHeader: the block's tar offset; kMeta: its header's offset; kFile: the data's offset; kError: where.
  uint64_t at = 0;
  // kHeader: the 512-byte block; kMeta: the payload.
  std::vector<uint8_t> bytes;
  // kFile: data size, sha256, chunk sha256s (32 bytes each; files over 1 MiB), offset of its bytes in
  // the concatenation of all staging buffers (-1: not staged).
  uint64_t size = 0;
  uint8_t digest[32] = {};
  std::vector<uint8_t> chunks;
  int64_t stagedAt = -1;
  // kError
  std::string message;
};

class TarWalker {
 public:
  // Files of 1..stageMax bytes are staged.
  explicit TarWalker(uint64_t stageMax);
  ~TarWalker();
  TarWalker(const TarWalker&) = delete;
  TarWalker& operator=(const TarWalker&) = delete;

  // Walks the next `n` bytes of the tar: appends events and the staged bytes of files in them.
  // After an error event, the rest is ignored. false: out of memory (or OpenSSL failed).
  bool Feed(const uint8_t* p, size_t n, std::vector<TarEvent>* events, std::vector<uint8_t>* staged);
  // What the input would end inside if it ended now: "" on an entry boundary, after the end marker
  // or after an error; else "a header", "the end-of-archive marker", "an extended header", "data",
  // "padding" or "a volume label".
  const char* Inside() const;
  // Tar bytes walked so far.
  uint64_t Position() const { return pos_; }
  // Whether any file can be staged (stageMax > 0).
  bool Stages() const { return stageMax_ > 0; }

 private:
  enum class State { kHeader, kMeta, kData, kSkip, kPad, kEnd, kFailed };
  void OnHeader(std::vector<TarEvent>* events);
  bool StartFile(uint64_t size, std::vector<TarEvent>* events);
  bool FinishFile(std::vector<TarEvent>* events);
  void FinishMeta(std::vector<TarEvent>* events);
  bool FinishChunk();
  void Fail(std::vector<TarEvent>* events, uint64_t at, std::string message);
  // After data of `size` bytes: its padding, then a header.
  void PadOrHeader(uint64_t size);
  // `size` bytes of data not walked (a volume label, a dumpdir's listing) and their padding, then a header.
  void SkipOrHeader(uint64_t size);

  uint64_t stageMax_;
  State state_ = State::kHeader;
  uint64_t pos_ = 0;
  uint64_t remaining_ = 0;
  uint8_t block_[512];
  size_t blockFill_ = 0;
  bool sawZero_ = false;
  uint64_t zeroAt_ = 0;
  // Extended header being read.
  char metaFlag_ = 0;
  uint64_t metaAt_ = 0;
  std::vector<uint8_t> meta_;
  // PAX size overrides: -1 none, -2 cleared (local: no override, global: hidden), else the size.
  int64_t localSize_ = -1;
  int64_t globalSize_ = -1;
  // File being hashed.
  uint64_t fileSize_ = 0;
  uint64_t fileAt_ = 0;
  bool fileStaged_ = false;
  int64_t fileStagedAt_ = -1;
  uint64_t stagedTotal_ = 0;
  bool chunked_ = false;
  uint64_t chunkFill_ = 0;
  std::vector<uint8_t> chunks_;
  EVP_MD_CTX* file_ = nullptr;
  EVP_MD_CTX* chunk_ = nullptr;
};

}  // namespace starlight
