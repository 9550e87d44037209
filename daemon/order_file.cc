#include "order_file.h"

#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "epoch_file.h"
#include "lockgraph/graph/report.h"

namespace lockgraph::daemon {

std::string EncodeLearnedOrder(const std::vector<graph::OrderEdge>& edges) {
  std::string out = "{\"version\":1,\"edges\":[";
  for (std::size_t i = 0; i < edges.size(); ++i) {
    out += i ? ",\n" : "\n";
    graph::AppendOrderEdgeJson(out, edges[i]);
  }
  out += "\n]}\n";
  return out;
}

std::variant<std::vector<graph::OrderEdge>, std::string> DecodeLearnedOrder(std::string_view text) {
  rapidjson::Document doc;
  doc.Parse(text.data(), text.size());
  if (doc.HasParseError()) {
    return "not JSON at offset " + std::to_string(doc.GetErrorOffset()) + ": " +
           rapidjson::GetParseError_En(doc.GetParseError());
  }
  if (!doc.IsObject() || !doc.HasMember("version") || !doc["version"].IsInt() || doc["version"].GetInt() != 1) {
    return std::string("expected an object with \"version\":1");
  }
  if (!doc.HasMember("edges") || !doc["edges"].IsArray()) return std::string("expected an array \"edges\"");
  std::vector<graph::OrderEdge> edges;
  const auto& array = doc["edges"];
  for (rapidjson::SizeType i = 0; i < array.Size(); ++i) {
    const auto& v = array[i];
    const std::string where = "edges[" + std::to_string(i) + "]";
    if (!v.IsObject()) return where + ": expected an object";
    graph::OrderEdge e;
    auto str = [&](const char* key, std::string& out, bool required) -> std::string {
      auto it = v.FindMember(key);
      if (it == v.MemberEnd()) return required ? where + ": missing \"" + key + "\"" : "";
      if (!it->value.IsString()) return where + "." + key + ": expected a string";
      out.assign(it->value.GetString(), it->value.GetStringLength());
      return "";
    };
    for (auto [key, out, required] : {std::tuple{"from", &e.from, true}, {"to", &e.to, true},
                                      {"site", &e.site, false}, {"session", &e.session, false},
                                      {"owner", &e.owner, false}, {"from_resource", &e.from_resource, false},
                                      {"from_site", &e.from_site, false}, {"to_resource", &e.to_resource, false}}) {
      if (std::string err = str(key, *out, required); !err.empty()) return err;
    }
    if (e.from.empty() || e.to.empty()) return where + ": empty class name";
    if (auto it = v.FindMember("first_seen_us"); it != v.MemberEnd()) {
      if (!it->value.IsInt64()) return where + ".first_seen_us: expected an integer";
      e.first_seen_us = it->value.GetInt64();
    }
    if (auto it = v.FindMember("count"); it != v.MemberEnd()) {
      if (!it->value.IsUint64()) return where + ".count: expected an unsigned integer";
      e.count = it->value.GetUint64();
    }
    edges.push_back(std::move(e));
  }
  return edges;
}

std::variant<std::vector<graph::OrderEdge>, std::string> LoadLearnedOrder(const std::string& data_dir) {
  const std::string path = data_dir + "/" + kOrderFileName;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::vector<graph::OrderEdge>{};
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return "cannot read " + path;
  auto decoded = DecodeLearnedOrder(text.str());
  if (auto* err = std::get_if<std::string>(&decoded)) return path + " is corrupt: " + *err;
  return decoded;
}

std::string SaveLearnedOrder(const std::string& data_dir, const std::vector<graph::OrderEdge>& edges) {
  return WriteFileDurably(data_dir, kOrderFileName, EncodeLearnedOrder(edges));
}

}  // namespace lockgraph::daemon
