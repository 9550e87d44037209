#include "epoch_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "lockgraph/graph/types.h"

namespace lockgraph::daemon {
namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

bool FsyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return false;
  bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

std::string WriteFileDurably(const std::string& dir, const std::string& name, const std::string& contents) {
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    out << contents;
    out.flush();
    if (!out) return Errno("cannot write", tmp);
  }
  if (!FsyncPath(tmp, O_RDONLY)) return Errno("cannot fsync", tmp);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Errno("cannot rename", tmp);
  if (!FsyncPath(dir, O_RDONLY | O_DIRECTORY)) return Errno("cannot fsync", dir);
  return "";
}

std::string StoreEpoch(const std::string& data_dir, std::uint32_t epoch) {
  return WriteFileDurably(data_dir, "epoch", std::to_string(epoch) + "\n");
}

std::variant<std::uint32_t, std::string> AdvanceEpoch(const std::string& data_dir) {
  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) return "cannot create data directory " + data_dir + ": " + ec.message();
  const std::string path = data_dir + "/epoch";
  std::uint64_t current = 0;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    std::string text;
    std::getline(in, text);
    if (!in && !in.eof()) return Errno("cannot read", path);
    if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 9) {
      return path + " is corrupt: expected a decimal epoch, found '" + text.substr(0, 32) + "'";
    }
    current = std::stoull(text);
  }
  if (current + 1 >= graph::kEpochLimit) {
    return "epoch " + std::to_string(current) + " in " + path +
           " is the last one: fencing tokens would overflow (see docs/operations)";
  }
  const auto next = static_cast<std::uint32_t>(current + 1);
  if (std::string err = StoreEpoch(data_dir, next); !err.empty()) return err;
  return next;
}

}  // namespace lockgraph::daemon
