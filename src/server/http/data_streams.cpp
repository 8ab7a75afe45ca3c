// Uploads and downloads of allocation bytes, one action dispatch per piece.
#include "server/http/data_streams.hpp"

#include <algorithm>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "protocol/action_table.hpp"
#include "protocol/params.hpp"

namespace memd {
namespace {

namespace asio = boost::asio;

// The allocation's size, through the action table (so the details action's
// own checks apply to the caller too).
Result<std::uint64_t> allocation_size(MemoryService& service, const Action& details, const nlohmann::json& params,
                                      const CallContext& context) {
  nlohmann::json query = {{"allocationId", params.value("allocationId", nlohmann::json())}};
  auto outcome = dispatch(service, details, query, context);
  if (!outcome) return fail(outcome.error());
  const auto& size = outcome->result["sizeBytes"];
  if (!size.is_number_unsigned())
    return fail(ErrorCode::internal, "{} answered no sizeBytes", details.name);
  return size.get<std::uint64_t>();
}

Result<std::uint64_t> offset_param(const Action& action, const nlohmann::json& params, const CallContext& context) {
  if (auto ok = validate_params(action, params, context); !ok) return fail(ok.error());
  auto offset = Params(params).size("offset");
  if (!offset) return fail(offset.error());
  return offset->value_or(0);
}

}  // namespace

// ---- upload ---------------------------------------------------------------

Result<UploadTarget> UploadTarget::open(MemoryService& service, DataActions actions, nlohmann::json params,
                                        CallContext context, std::optional<std::uint64_t> length) {
  if (actions.transfer == nullptr || actions.details == nullptr)
    return fail(ErrorCode::internal, "the data routes' actions are missing from the action table");
  context.payload = std::span<const std::byte>{};
  auto offset = offset_param(*actions.transfer, params, context);
  if (!offset) return fail(offset.error());

  UploadTarget t;
  t.service_ = &service;
  t.actions_ = actions;
  t.offset_ = *offset;
  // An empty write at the offset: the allocation exists, the caller may
  // write it, the offset is inside it — every check the pieces will pass.
  params["offset"] = t.offset_;
  auto empty = dispatch(service, *actions.transfer, params, context);
  if (!empty) return fail(empty.error());
  t.result_ = std::move(empty->result);
  if (length) {
    auto size = allocation_size(service, *actions.details, params, context);
    if (!size) return fail(size.error());
    if (*length > *size - t.offset_)
      return fail(ErrorCode::out_of_range, "write of {} bytes at offset {} is outside the allocation of {} bytes",
                  *length, t.offset_, *size);
  }
  t.params_ = std::move(params);
  t.context_ = std::move(context);
  return t;
}

Result<void> UploadTarget::write(std::span<const std::byte> piece) {
  params_["offset"] = offset_ + written_;
  context_.payload = piece;
  auto outcome = dispatch(*service_, *actions_.transfer, params_, context_);
  context_.payload = std::span<const std::byte>{};
  if (!outcome) return fail(outcome.error());
  written_ += piece.size();
  return {};
}

nlohmann::json UploadTarget::result() const {
  nlohmann::json out = result_;
  out["offset"] = offset_;
  out["bytesWritten"] = written_;
  return out;
}

// ---- download -------------------------------------------------------------

Result<std::unique_ptr<DownloadSource>> DownloadSource::open(MemoryService& service, DataActions actions,
                                                             nlohmann::json params, CallContext context,
                                                             asio::any_io_executor worker) {
  if (actions.transfer == nullptr || actions.details == nullptr)
    return fail(ErrorCode::internal, "the data routes' actions are missing from the action table");
  context.binary_response = true;
  auto offset = offset_param(*actions.transfer, params, context);
  if (!offset) return fail(offset.error());
  auto length = Params(params).size("length");
  if (!length) return fail(length.error());
  auto size = allocation_size(service, *actions.details, params, context);
  if (!size) return fail(size.error());
  // The handler's own messages, for the whole read rather than a piece.
  if (*offset > *size)
    return fail(ErrorCode::out_of_range, "offset {} is beyond the allocation's {} bytes", *offset, *size);
  if (*length && **length > *size - *offset)
    return fail(ErrorCode::out_of_range, "read of {} bytes at offset {} is outside the allocation of {} bytes",
                **length, *offset, *size);

  std::unique_ptr<DownloadSource> s(new DownloadSource());
  s->service_ = &service;
  s->actions_ = actions;
  s->params_ = std::move(params);
  s->context_ = std::move(context);
  s->worker_ = std::move(worker);
  s->offset_ = *offset;
  s->length_ = length->value_or(*size - *offset);
  // Read the first piece now, even an empty one: it is the read's own
  // permission and bounds check, answered before any header is sent.
  auto first = s->read(s->offset_, std::min(kDownloadPieceBytes, s->length_));
  if (!first) return fail(first.error());
  s->produced_ = first->size();
  if (!first->empty()) s->first_ = std::move(*first);
  return s;
}

Result<Piece> DownloadSource::read(std::uint64_t offset, std::uint64_t bytes) {
  params_["offset"] = offset;
  params_["length"] = bytes;
  auto outcome = dispatch(*service_, *actions_.transfer, params_, context_);
  if (!outcome) return fail(outcome.error());
  if (!outcome->bytes || outcome->bytes->size() != bytes)
    return fail(ErrorCode::internal, "{} answered {} bytes of {}", actions_.transfer->name,
                outcome->bytes ? outcome->bytes->size() : 0, bytes);
  return std::move(*outcome->bytes);
}

asio::awaitable<Result<Piece>> DownloadSource::next() {
  if (first_) {
    Piece piece = std::move(*first_);
    first_.reset();
    co_return piece;
  }
  if (produced_ >= length_) co_return Piece{};
  const std::uint64_t at = offset_ + produced_;
  const std::uint64_t bytes = std::min(kDownloadPieceBytes, length_ - produced_);
  produced_ += bytes;
  auto work = [this, at, bytes]() -> asio::awaitable<Result<Piece>> { co_return read(at, bytes); };
  Result<Piece> piece = co_await asio::co_spawn(worker_, work, asio::use_awaitable);
  co_return piece;
}

}  // namespace memd
