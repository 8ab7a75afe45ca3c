// server/http/data_streams.hpp — the two binary routes (PUT and GET
// /api/memory/allocations/{id}/data) streamed in pieces through the action
// table.
//
// Both are checked whole before a body byte moves: the upload before its body
// is read (the allocation exists, the caller may write at the offset, offset +
// Content-Length fits in the allocation: `out_of_range` otherwise), the
// download before its header is sent (the same, for reading). Then every
// piece is one dispatch of memory_write / memory_read with the offset
// advanced, so each piece passes exactly the checks a whole request would
// (parameters, owner and permission rules, bounds) and the handlers stay the
// only code that touches allocation bytes. A piece that fails mid-way (the
// allocation was freed meanwhile) ends the transfer: an upload answers the
// error, and the pieces before it stay written; a download is cut short.
//
// Piece sizes: a download piece is 64 KiB. write_streamed keeps two alive per
// response, so 1,000 slow readers hold 128 MiB of pieces, within the daemon's
// 256 MiB budget over allocated bytes with room for 10,000 idle connections
// (docs/architecture.md, "Memory per connection"); larger pieces gain little,
// the worker hop per piece being a few microseconds against a 64 KiB copy.
// An upload piece is 256 KiB (one buffer per upload, filled by the socket
// while nothing else is in flight), where fewer hops per byte pay more since
// the reader waits for each write.
//
// Thread safety: open() and the piece calls run on the worker pool (they may
// block on the allocator); a DownloadSource's next() runs on the connection's
// strand and sends its work to the pool. One object per request.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "memd/error.hpp"
#include "memd/size.hpp"
#include "protocol/action.hpp"
#include "server/http/streamed_response.hpp"

namespace memd {

inline constexpr std::uint64_t kDownloadPieceBytes = 64 * kKiB;
inline constexpr std::uint64_t kUploadPieceBytes = 256 * kKiB;

// The actions a data stream dispatches: the route's own (memory_write or
// memory_read) and memory_allocation_details, whose sizeBytes bounds the
// whole transfer up front.
struct DataActions {
  const Action* transfer = nullptr;
  const Action* details = nullptr;
};

class UploadTarget {
 public:
  UploadTarget() = default;  // unopened (Result and co_spawn need one); use open()
  // Blocking. params: path and query parameters (allocationId, offset);
  // length: the Content-Length, nullopt for a chunked body (bounds are then
  // checked piece by piece as it arrives).
  static Result<UploadTarget> open(MemoryService& service, DataActions actions, nlohmann::json params,
                                   CallContext context, std::optional<std::uint64_t> length);
  // Blocking: writes the next piece where the last one ended.
  Result<void> write(std::span<const std::byte> piece);
  std::uint64_t written() const noexcept { return written_; }
  // memory_write's answer for the whole body.
  nlohmann::json result() const;

 private:
  MemoryService* service_ = nullptr;
  DataActions actions_;
  nlohmann::json params_;
  CallContext context_;
  nlohmann::json result_;
  std::uint64_t offset_ = 0;
  std::uint64_t written_ = 0;
};

class DownloadSource final : public PieceSource {
 public:
  // Blocking: checks the whole read and reads the first piece (so a refusal
  // still becomes a proper error response). worker: where next() reads.
  static Result<std::unique_ptr<DownloadSource>> open(MemoryService& service, DataActions actions,
                                                      nlohmann::json params, CallContext context,
                                                      boost::asio::any_io_executor worker);
  std::uint64_t length() const noexcept { return length_; }
  boost::asio::awaitable<Result<Piece>> next() override;

 private:
  DownloadSource() = default;
  Result<Piece> read(std::uint64_t offset, std::uint64_t bytes);  // blocking

  MemoryService* service_ = nullptr;
  DataActions actions_;
  nlohmann::json params_;
  CallContext context_;
  boost::asio::any_io_executor worker_;
  std::uint64_t offset_ = 0;
  std::uint64_t length_ = 0;
  std::uint64_t produced_ = 0;  // bytes handed out or held in first_
  std::optional<Piece> first_;
};

}  // namespace memd
