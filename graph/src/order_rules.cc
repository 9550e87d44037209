#include "lockgraph/graph/order_rules.h"

#include <toml++/toml.h>

namespace lockgraph::graph {

std::string ParseOrderRules(std::string_view toml_text, std::string_view source, OrderRules& rules,
                            bool require_table) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return std::string(source) + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
           std::string(e.description());
  }
  const toml::node* node = root.get("ordering");
  if (node == nullptr) {
    return require_table ? std::string(source) + ": no [ordering] table (see docs/ordering.md)" : "";
  }
  const std::string at = std::string(source) + ": ordering";
  const toml::table* t = node->as_table();
  if (t == nullptr) return at + ": expected a table";
  OrderRules out = rules;
  for (const auto& [key, value] : *t) {
    const std::string_view k = key.str();
    if (k == "mode") {
      auto m = value.value<std::string>();
      auto parsed = m ? ParseOrderMode(*m) : std::nullopt;
      if (!value.is_string() || !parsed) return at + ".mode: expected \"off\", \"warn\" or \"enforce\"";
      out.mode = *parsed;
    } else if (k == "separator") {
      auto s = value.value<std::string>();
      if (!value.is_string() || !s || s->size() != 1) return at + ".separator: expected a one-byte string";
      out.separator = (*s)[0];
    } else if (k == "max_learned_edges") {
      auto n = value.value<std::int64_t>();
      if (!value.is_integer() || !n || *n < 0 || *n > (std::int64_t{1} << 30)) {
        return at + ".max_learned_edges: expected an integer in [0, 2^30]";
      }
      out.max_learned_edges = static_cast<std::size_t>(*n);
    } else if (k != "rank" && k != "within" && k != "class_mode") {
      return at + "." + std::string(k) +
             ": unknown key (expected mode, separator, max_learned_edges, rank, within or class_mode)";
    }
  }
  auto each = [&](std::string_view name, auto&& fn) -> std::string {
    const toml::node* n = t->get(name);
    if (n == nullptr) return "";
    const toml::table* tt = n->as_table();
    if (tt == nullptr) return at + "." + std::string(name) + ": expected a table of class = value";
    for (const auto& [cls, value] : *tt) {
      if (cls.str().empty()) return at + "." + std::string(name) + ": a class name is empty";
      std::string e = fn(std::string(cls.str()), value, at + "." + std::string(name) + "." + std::string(cls.str()));
      if (!e.empty()) return e;
    }
    return "";
  };
  std::string err = each("rank", [&](const std::string& cls, const toml::node& v, const std::string& where) {
    if (!v.is_integer()) return where + ": expected an integer rank";
    out.classes[cls].rank = *v.value<std::int64_t>();
    return std::string();
  });
  if (err.empty()) {
    err = each("within", [&](const std::string& cls, const toml::node& v, const std::string& where) {
      auto s = v.value<std::string>();
      auto w = s ? ParseWithinRule(*s) : std::nullopt;
      if (!v.is_string() || !w) return where + ": expected \"ascending\", \"descending\" or \"none\"";
      out.classes[cls].within = *w;
      return std::string();
    });
  }
  if (err.empty()) {
    err = each("class_mode", [&](const std::string& cls, const toml::node& v, const std::string& where) {
      auto s = v.value<std::string>();
      auto m = s ? ParseOrderMode(*s) : std::nullopt;
      if (!v.is_string() || !m) return where + ": expected \"off\", \"warn\" or \"enforce\"";
      out.classes[cls].mode = *m;
      return std::string();
    });
  }
  if (err.empty()) rules = std::move(out);
  return err;
}

}  // namespace lockgraph::graph
