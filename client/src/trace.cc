#include "lockgraph/trace.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include "lockgraph/protocol.h"

namespace lockgraph::protocol {

std::variant<graph::TraceOp, TraceSkip, std::string> ParseTraceLine(std::string_view line) {
  if (line.size() > kMaxTraceLineBytes) {
    return "line of " + std::to_string(line.size()) + " bytes is over the limit of " +
           std::to_string(kMaxTraceLineBytes);
  }
  const std::size_t first = line.find_first_not_of(" \t\r");
  if (first == std::string_view::npos || line[first] == '#') return TraceSkip{};
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseValidateEncodingFlag>(line.data(), line.size());
  if (doc.HasParseError()) {
    return "not JSON (offset " + std::to_string(doc.GetErrorOffset()) +
           "): " + rapidjson::GetParseError_En(doc.GetParseError());
  }
  if (!doc.IsObject()) return std::string("expected a JSON object (one request per line)");
  auto string = [&](const char* key, std::string& out, bool required) -> std::string {
    auto it = doc.FindMember(key);
    if (it == doc.MemberEnd()) return required ? std::string("missing field \"") + key + "\"" : "";
    if (!it->value.IsString()) return std::string("field \"") + key + "\" must be a string";
    out.assign(it->value.GetString(), it->value.GetStringLength());
    if (required && out.empty()) return std::string("field \"") + key + "\" is empty";
    return "";
  };
  std::string op;
  if (std::string err = string("op", op, true); !err.empty()) return err;
  graph::TraceOp t;
  if (op == "hold") t.kind = graph::TraceOp::Kind::kHold;
  else if (op == "wait") t.kind = graph::TraceOp::Kind::kWait;
  else if (op == "acquire") t.kind = graph::TraceOp::Kind::kAcquire;
  else if (op == "release") t.kind = graph::TraceOp::Kind::kRelease;
  else if (op == "unwait") t.kind = graph::TraceOp::Kind::kUnwait;
  else if (ParseOp(op)) return TraceSkip{};
  else return "unknown op \"" + op + "\" (expected hold, wait, acquire, release or unwait)";
  for (auto [key, out, required] : {std::tuple{"session", &t.session, false}, {"owner", &t.owner, true},
                                    {"resource", &t.resource, true}, {"site", &t.site, false}}) {
    if (std::string err = string(key, *out, required); !err.empty()) return err;
  }
  std::string mode = "X";
  if (std::string err = string("mode", mode, false); !err.empty()) return err;
  auto parsed = graph::ParseMode(mode);
  if (!parsed) return "field \"mode\" must be \"X\" or \"S\", got \"" + mode + "\"";
  t.mode = *parsed;
  if (auto it = doc.FindMember("wait_ms"); it != doc.MemberEnd()) {
    if (!it->value.IsInt64()) return std::string("field \"wait_ms\" must be an integer");
    t.wait_ms = it->value.GetInt64();
  }
  return t;
}

}  // namespace lockgraph::protocol
