// The persisted epoch: the high 24 bits of every fencing token. It grows at every
// start, and is on disk before the daemon serves, so tokens never go backwards
// across restarts (DESIGN.md, "Time, durability, fail-over").
#ifndef LOCKGRAPH_DAEMON_EPOCH_FILE_H_
#define LOCKGRAPH_DAEMON_EPOCH_FILE_H_

#include <cstdint>
#include <string>
#include <variant>

namespace lockgraph::daemon {

// Creates `data_dir` if needed, reads DATA_DIR/epoch (0 when absent), and durably
// stores and returns the next one: write a temporary file, fsync it, rename it over
// the old one, fsync the directory. Fails (with a message naming the file) on an
// unreadable or corrupt file, on I/O errors, and at epoch 2^24-1.
std::variant<std::uint32_t, std::string> AdvanceEpoch(const std::string& data_dir);

// Durably stores `epoch` (which must be above the stored one) the same way.
std::string StoreEpoch(const std::string& data_dir, std::uint32_t epoch);

// Replaces DIR/NAME with `contents` so that a crash leaves the old file or the new
// one, never a mix: write DIR/NAME.tmp, fsync it, rename it, fsync the directory.
// Returns an error naming the file, or an empty string.
std::string WriteFileDurably(const std::string& dir, const std::string& name, const std::string& contents);

}  // namespace lockgraph::daemon

#endif  // LOCKGRAPH_DAEMON_EPOCH_FILE_H_
