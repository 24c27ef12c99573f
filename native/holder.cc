// starlight-fuse-holder SOCKET: keeps the /dev/fuse fds of mounted views (and their state fds, see
// passthrough.h) alive while no daemon runs, so a daemon restart, crash or upgrade does not end the
// FUSE connections of running containers (issue 13; docs/lazy-pull.md "Daemon restarts").
//
// Protocol: SOCK_SEQPACKET at SOCKET, one request → one reply (fd_passing.h), texts:
//   ATTACH <deadlineMs>  this connection is the serving daemon's, until it closes → OK <pid> <entries>
//   PUT <key>  + 2 fds   hold the device fd and state fd of view <key> (replaces)  → OK
//   DEL <key>            close and forget view <key>                                → OK
//   GET <i>              the i-th held view                                        → ENT <key> + 2 fds | END
//   QUIT                 close everything and exit                                  → OK
// While no daemon is attached for longer than its deadline, the holder answers every request of
// every held connection with EIO (after FUSE_NOTIFY_RESEND, so reads the dead daemon had taken get
// the answer too): a read never hangs. A connection whose device reports POLLERR (unmounted,
// aborted) is dropped. The holder exits once it holds nothing and no daemon is attached.
// It has no other job: small, no Node, no allocation on the request path beyond the entry table.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fd_passing.h"
#include "fuse_raw.h"

namespace {

using starlight::FdRecv;
using starlight::FdSend;

constexpr size_t kMaxClients = 32;
constexpr int kIdleExitMs = 10000;  // exit if nobody ever connects
constexpr uint32_t kOpForget = 2, kOpInterrupt = 36, kOpBatchForget = 42;
constexpr size_t kDevBuffer = (1u << 20) + 4096;  // ≥ any request of a read-only mount

struct Entry {
  std::string key;
  int dev;
  int state;
};

struct Client {
  int fd;
  bool attached;
};

std::vector<Entry> entries;
std::vector<Client> clients;
int64_t deadlineMs = 60000;
int64_t detachedAt = -1;  // ms when the last daemon left (-1: a daemon is attached or none left yet)
bool failing = false;     // answering every request with EIO
bool everAttached = false;
const char* socketPath = nullptr;

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void Log(const char* what, const std::string& key) { fprintf(stderr, "starlight-fuse-holder: %s %s\n", what, key.c_str()); }

void Drop(size_t i) {
  close(entries[i].dev);
  close(entries[i].state);
  entries.erase(entries.begin() + long(i));
}

bool Attached() {
  for (const Client& c : clients)
    if (c.attached) return true;
  return false;
}

void StartFailing() {
  failing = true;
  for (const Entry& e : entries) {
    (void)starlight::WriteOutHeader(e.dev, starlight::kNotifyResend, 0);
    Log("no daemon within the read deadline: answering EIO on", e.key);
  }
}

// Answers every request waiting on `dev` with EIO (the fd is non-blocking: the daemon set it).
void FailRequests(int dev) {
  static char* buf = static_cast<char*>(malloc(kDevBuffer));
  if (buf == nullptr) return;
  for (;;) {
    const ssize_t n = read(dev, buf, kDevBuffer);
    if (n < 40) return;  // EAGAIN, ENODEV or a short read: nothing (more) to answer
    uint32_t opcode;
    uint64_t unique;
    std::memcpy(&opcode, buf + 4, sizeof(opcode));
    std::memcpy(&unique, buf + 8, sizeof(unique));
    if (opcode == kOpForget || opcode == kOpBatchForget || opcode == kOpInterrupt) continue;
    (void)starlight::WriteOutHeader(dev, -EIO, unique);
  }
}

void Handle(Client& c, const std::string& text, std::vector<int>& fds) {
  std::string reply = "ERR bad request";
  std::vector<int> out;
  const size_t sp = text.find(' ');
  const std::string cmd = text.substr(0, sp);
  const std::string arg = sp == std::string::npos ? std::string() : text.substr(sp + 1);
  if (cmd == "ATTACH") {
    const long long d = atoll(arg.c_str());
    if (d > 0) deadlineMs = d;
    c.attached = true;
    everAttached = true;
    failing = false;
    detachedAt = -1;
    reply = "OK " + std::to_string(getpid()) + " " + std::to_string(entries.size());
  } else if (cmd == "PUT" && !arg.empty() && fds.size() == 2) {
    for (size_t i = 0; i < entries.size(); i++)
      if (entries[i].key == arg) Drop(i--);
    entries.push_back(Entry{arg, fds[0], fds[1]});
    fds.clear();
    reply = "OK";
  } else if (cmd == "DEL" && !arg.empty()) {
    for (size_t i = 0; i < entries.size(); i++)
      if (entries[i].key == arg) Drop(i--);
    reply = "OK";
  } else if (cmd == "GET") {
    const size_t i = size_t(atoll(arg.c_str()));
    if (i < entries.size()) {
      reply = "ENT " + entries[i].key;
      out = {entries[i].dev, entries[i].state};
    } else {
      reply = "END";
    }
  } else if (cmd == "QUIT") {
    while (!entries.empty()) Drop(entries.size() - 1);
    unlink(socketPath);
    FdSend(c.fd, "OK", {});
    exit(0);
  }
  for (int fd : fds) close(fd);  // fds with a request that takes none
  fds.clear();
  FdSend(c.fd, reply, out);
}

int Listen(const char* path) {
  sockaddr_un addr{};
  if (strlen(path) >= sizeof(addr.sun_path)) return -1;
  const int probe = starlight::FdConnect(path);
  if (probe >= 0) {  // another holder serves this path
    close(probe);
    return -2;
  }
  unlink(path);
  const int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, path);
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(s, 16) != 0) return -1;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: starlight-fuse-holder SOCKET\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  socketPath = argv[1];
  const int ls = Listen(argv[1]);
  if (ls == -2) return 0;
  if (ls < 0) {
    fprintf(stderr, "starlight-fuse-holder: cannot listen on %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  const int64_t started = NowMs();
  for (;;) {
    const bool attached = Attached();
    if (!attached && entries.empty() && (everAttached || NowMs() - started > kIdleExitMs)) break;
    if (!attached && !entries.empty() && detachedAt < 0) detachedAt = NowMs();
    int timeout = -1;
    if (!attached && !failing && detachedAt >= 0) {
      const int64_t left = detachedAt + deadlineMs - NowMs();
      if (left <= 0) {
        StartFailing();
      } else {
        timeout = int(left);
      }
    }
    if (!everAttached) timeout = 1000;
    std::vector<pollfd> p;
    p.push_back({ls, POLLIN, 0});
    for (const Client& c : clients) p.push_back({c.fd, POLLIN, 0});
    // events 0: only POLLERR (connection gone) wakes us, unless we answer requests ourselves.
    for (const Entry& e : entries) p.push_back({e.dev, short(failing ? POLLIN : 0), 0});
    if (poll(p.data(), p.size(), timeout) < 0 && errno != EINTR) return 1;
    const size_t nc = clients.size();
    for (size_t i = entries.size(); i-- > 0;) {
      const short re = p[1 + nc + i].revents;
      if (re & (POLLERR | POLLHUP | POLLNVAL)) {
        Log("connection ended:", entries[i].key);
        Drop(i);
      } else if (re & POLLIN) {
        FailRequests(entries[i].dev);
      }
    }
    for (size_t i = nc; i-- > 0;) {
      if ((p[1 + i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      std::string text;
      std::vector<int> fds;
      const int r = FdRecv(clients[i].fd, 0, &text, &fds);
      if (r == 0) {
        Handle(clients[i], text, fds);
      } else if (r != -ETIMEDOUT && r != -EAGAIN && r != -EMSGSIZE) {
        close(clients[i].fd);
        clients.erase(clients.begin() + long(i));
      }
    }
    if (p[0].revents & POLLIN) {
      const int c = accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0 && clients.size() < kMaxClients) {
        clients.push_back(Client{c, false});
      } else if (c >= 0) {
        close(c);
      }
    }
  }
  unlink(argv[1]);
  return 0;
}
