// tools/memd/table.hpp — aligned text tables for the CLI's human output.
//
// Thread safety: a value; not shared.
#pragma once

#include <string>
#include <vector>

namespace memd::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  bool empty() const noexcept { return rows_.empty(); }
  // Columns padded to their widest cell, two spaces apart, header first.
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace memd::cli
