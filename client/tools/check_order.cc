#include "check_order.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "journal.h"
#include "lockgraph/graph/order_rules.h"
#include "lockgraph/trace.h"
#include "replay.h"

namespace lockgraph::tools {
namespace {

std::string XmlEscape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 allows no control characters but tab and newlines.
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') out += '?';
        else out += static_cast<char>(c);
    }
  }
  return out;
}

std::string Headline(const graph::OrderReport& r) {
  switch (r.kind) {
    case graph::OrderKind::kInversion:
      return r.from == r.to ? "possible recursive locking: " + r.from + " nested in itself"
                            : "possible circular locking dependency: " + r.from + " -> " + r.to;
    case graph::OrderKind::kRank: return "rank rule broken: " + r.from + " -> " + r.to;
    case graph::OrderKind::kWithin: return "within-class rule broken: " + r.from;
  }
  return "lock order problem";
}

struct FileResult {
  std::string path;
  bool journal = false;  // a journal segment: `lines` counts records
  std::size_t lines = 0;
  std::string error;  // unreadable input
  std::vector<std::shared_ptr<const graph::OrderReport>> reports;
  std::vector<std::string> report_where;  // "PATH:LINE" or "PATH: record N"
};

// A journal segment starts with the journal's magic; anything else is read as a trace.
bool IsJournal(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string head(daemon::kJournalMagic.size(), '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  return in.gcount() == static_cast<std::streamsize>(head.size()) && head == daemon::kJournalMagic;
}

// Checks the holds, waits and acquires a journal segment shows (daemon/replay.h's
// TraceOpsOf). A damaged tail is a warning: the good records are checked.
void CheckJournal(FileResult& f, graph::TraceChecker& checker, bool quiet) {
  auto scanned = daemon::ScanSegment(f.path);
  if (auto* err = std::get_if<std::string>(&scanned)) {
    f.error = *err;
    return;
  }
  const daemon::SegmentScan& scan = std::get<daemon::SegmentScan>(scanned);
  if (scan.torn()) {
    std::cerr << "lockgraphctl: warning: " << scan.problem << "; checked up to the last good record\n";
  }
  auto replayed = daemon::ReplaySegment(scan, std::nullopt, [&](const daemon::ReplayStep& step) {
    f.lines = step.number;
    for (const graph::TraceOp& op : daemon::TraceOpsOf(step)) {
      for (auto& report : checker.Apply(op, step.record->now_us)) {
        const std::string where = f.path + ": record " + std::to_string(step.number);
        if (!quiet) std::cout << where << ": " << Headline(*report) << "\n" << graph::RenderOrderText(*report) << "\n";
        f.reports.push_back(std::move(report));
        f.report_where.push_back(where);
      }
    }
  });
  if (auto* err = std::get_if<std::string>(&replayed)) f.error = f.path + ": " + *err;
}

std::string JUnit(const std::vector<FileResult>& files) {
  std::size_t tests = files.size(), failures = 0, errors = 0;
  for (const FileResult& f : files) {
    failures += f.reports.empty() ? 0 : 1;
    errors += f.error.empty() ? 0 : 1;
  }
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<testsuites>\n<testsuite name=\"lockgraph.check-order\" tests=\"" + std::to_string(tests) +
         "\" failures=\"" + std::to_string(failures) + "\" errors=\"" + std::to_string(errors) + "\">\n";
  for (const FileResult& f : files) {
    out += "  <testcase classname=\"lockgraph.check-order\" name=\"" + XmlEscape(f.path) + "\">\n";
    if (!f.error.empty()) out += "    <error message=\"" + XmlEscape(f.error) + "\"/>\n";
    for (std::size_t i = 0; i < f.reports.size(); ++i) {
      const auto& r = *f.reports[i];
      out += "    <failure type=\"" + std::string(graph::OrderKindName(r.kind)) + "\" message=\"" +
             XmlEscape(f.report_where[i] + ": " + Headline(r)) + "\">" +
             XmlEscape(graph::RenderOrderText(r)) + "</failure>\n";
    }
    out += "  </testcase>\n";
  }
  out += "</testsuite>\n</testsuites>\n";
  return out;
}

}  // namespace

int CheckOrder(const CheckOrderOptions& o) {
  graph::OrderRules rules;
  if (!o.rules_file.empty()) {
    std::ifstream in(o.rules_file, std::ios::binary);
    if (!in) {
      std::cerr << "lockgraphctl: cannot read rules file " << o.rules_file << "\n";
      return 2;
    }
    std::stringstream text;
    text << in.rdbuf();
    if (std::string err = graph::ParseOrderRules(text.str(), o.rules_file, rules, /*require_table=*/true);
        !err.empty()) {
      std::cerr << "lockgraphctl: " << err << "\n";
      return 2;
    }
  }
  if (o.mode) rules.mode = *o.mode;
  // One checker across every file: the traces of one test run form one order.
  graph::TraceChecker checker(rules);
  std::vector<FileResult> files;
  bool unreadable = false;
  for (const std::string& path : o.traces) {
    FileResult& f = files.emplace_back();
    f.path = path;
    if (IsJournal(path)) {
      f.journal = true;
      CheckJournal(f, checker, o.quiet);
      if (!f.error.empty()) {
        std::cerr << "lockgraphctl: " << f.error << "\n";
        unreadable = true;
      }
      continue;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      f.error = path + ": cannot open";
      std::cerr << "lockgraphctl: " << f.error << "\n";
      unreadable = true;
      continue;
    }
    std::string line;
    while (std::getline(in, line)) {
      ++f.lines;
      auto parsed = protocol::ParseTraceLine(line);
      if (auto* err = std::get_if<std::string>(&parsed)) {
        f.error = path + ":" + std::to_string(f.lines) + ": " + *err;
        std::cerr << "lockgraphctl: " << f.error << "\n";
        unreadable = true;
        break;
      }
      auto* op = std::get_if<graph::TraceOp>(&parsed);
      if (op == nullptr) continue;
      for (auto& report : checker.Apply(*op, /*now=*/0)) {  // a trace has no clock
        if (!o.quiet) {
          std::cout << path << ":" << f.lines << ": " << Headline(*report) << "\n"
                    << graph::RenderOrderText(*report) << "\n";
        }
        f.reports.push_back(std::move(report));
        f.report_where.push_back(path + ":" + std::to_string(f.lines));
      }
    }
    if (f.error.empty() && in.bad()) {
      f.error = path + ": read error";
      std::cerr << "lockgraphctl: " << f.error << "\n";
      unreadable = true;
    }
  }
  std::size_t reports = 0, lines = 0, records = 0;
  for (const FileResult& f : files) {
    reports += f.reports.size();
    (f.journal ? records : lines) += f.lines;
  }
  const graph::OrderStats& s = checker.checker().stats();
  std::cout << "check-order: " << reports << " report(s) (" << s.repeats << " repeat(s) counted), "
            << s.learned_edges << " class edge(s) learned, "
            << (records == 0 || lines > 0 ? std::to_string(lines) + " line(s)" : std::string())
            << (records > 0 && lines > 0 ? " and " : "")
            << (records > 0 ? std::to_string(records) + " journal record(s)" : std::string()) << " in "
            << files.size() << " file(s)\n";
  if (!o.junit.empty()) {
    std::ofstream out(o.junit, std::ios::trunc);
    out << JUnit(files);
    if (!out) {
      std::cerr << "lockgraphctl: cannot write " << o.junit << "\n";
      return 2;
    }
  }
  if (unreadable) return 2;
  return reports > 0 ? 1 : 0;
}

}  // namespace lockgraph::tools
