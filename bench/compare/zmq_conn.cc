#include "zmq_conn.h"

#include <stdexcept>

namespace lockgraph::bench {

using protocol::DecodeError;
using protocol::Event;
using protocol::Reply;
using protocol::Request;
using protocol::ServerMessage;

LockgraphConn::LockgraphConn(zmq::context_t& ctx, const Options& o)
    : sock_(ctx, zmq::socket_type::dealer), timeout_ms_(o.reply_timeout_ms) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.connect(o.endpoint);
}

std::uint64_t LockgraphConn::Send(Request& req) {
  req.id = ++next_id_;
  if (!session_.empty() && protocol::IsSessionScoped(req.op)) {
    req.session = session_;
    req.secret = secret_;
  }
  const std::string frame = protocol::EncodeRequest(req, protocol::Encoding::kBinary);
  sock_.send(zmq::buffer(frame), zmq::send_flags::none);
  return req.id;
}

bool LockgraphConn::Readable(int ms) {
  zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
  return zmq::poll(&item, 1, std::chrono::milliseconds(ms)) > 0;
}

ServerMessage LockgraphConn::Receive() {
  if (!Readable(timeout_ms_)) throw std::runtime_error("no message within " + std::to_string(timeout_ms_) + " ms");
  zmq::message_t msg;
  if (!sock_.recv(msg, zmq::recv_flags::dontwait)) throw std::runtime_error("readable socket had no message");
  auto decoded = protocol::DecodeServerMessage(msg.to_string_view());
  if (auto* err = std::get_if<DecodeError>(&decoded)) throw std::runtime_error("undecodable frame: " + err->message);
  return std::move(std::get<ServerMessage>(decoded));
}

Reply LockgraphConn::ReplyTo(std::uint64_t id) {
  for (;;) {
    ServerMessage m = Receive();
    if (auto* r = std::get_if<Reply>(&m)) {
      if (r->id == id) return std::move(*r);
      if (r->id > id) throw std::runtime_error("reply " + std::to_string(r->id) + " before " + std::to_string(id));
      continue;  // an older request's reply, which its sender gave up on
    }
    events_.push_back(std::move(std::get<Event>(m)));
  }
}

Event LockgraphConn::NextEvent() {
  if (!events_.empty()) {
    Event e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  for (;;) {
    ServerMessage m = Receive();
    if (auto* e = std::get_if<Event>(&m)) return std::move(*e);
    // A reply nobody waits for (a pipelined request's, already abandoned): skip it.
  }
}

void LockgraphConn::Hello(const std::string& client, std::int64_t ttl_ms) {
  Request hello;
  hello.op = protocol::Op::kHello;
  hello.client = client;
  hello.ttl_ms = ttl_ms;
  Reply r = Call(hello);
  if (!r.ok() || !r.session || !r.secret) {
    throw std::runtime_error("hello refused: " + std::string(graph::CodeName(r.code)) + " " + r.message);
  }
  session_ = *r.session;
  secret_ = *r.secret;
}

void LockgraphConn::Bye() {
  if (session_.empty()) return;
  Request bye;
  bye.op = protocol::Op::kBye;
  try {
    Call(bye);
  } catch (const std::exception&) {
  }
  session_.clear();
}

}  // namespace lockgraph::bench
