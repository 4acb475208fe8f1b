package dev.outbox.r2dbc;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Timestamp;
import com.google.protobuf.UnsafeByteOperations;
import dev.outbox.r2dbc.internal.proto.TransportMessage;
import dev.outbox.r2dbc.internal.proto.TransportMessageBatch;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/**
 * {@code streams.TransportMessageBatch} in protobuf, as written by the Go {@code streams}
 * package. An absent key travels as the empty string (proto3 has no presence for strings),
 * which is why {@link Message} refuses empty keys.
 */
final class ProtobufCodec implements Codec {
  static final ProtobufCodec INSTANCE = new ProtobufCodec();

  private ProtobufCodec() {}

  @Override
  public byte[] encode(List<Message> batch) {
    TransportMessageBatch.Builder out = TransportMessageBatch.newBuilder();
    for (Message m : batch) {
      Instant t = m.time();
      out.addMessages(
          TransportMessage.newBuilder()
              .setMessageId(m.id())
              .setStreamName(m.stream())
              .setStreamKey(m.key().orElse(""))
              .putAllHeaders(m.headers())
              .setContentType(m.contentType())
              .setData(ByteString.copyFrom(m.data()))
              .setTime(Timestamp.newBuilder().setSeconds(t.getEpochSecond()).setNanos(t.getNano())));
    }
    return out.build().toByteArray();
  }

  @Override
  public List<Message> decode(byte[] raw) {
    TransportMessageBatch batch;
    try {
      // Aliasing: each message's data is a view of raw (never modified) until copied once below
      // (toByteArray, then owned by the message): three copies fewer than parseFrom(raw) + data().
      CodedInputStream in = UnsafeByteOperations.unsafeWrap(raw).newCodedInput();
      in.enableAliasing(true);
      batch = TransportMessageBatch.parser().parseFrom(in);
      in.checkLastTagWas(0); // as parseFrom(byte[]) does, whatever the runtime's unknown fields do
    } catch (InvalidProtocolBufferException e) {
      throw new UndecodableBatchException(
          "raw_data is not a protobuf streams.TransportMessageBatch: " + e.getMessage(), e);
    }
    if (batch.getMessagesCount() == 0) {
      throw new UndecodableBatchException(
          "raw_data decodes to a batch with no messages (" + raw.length + " bytes)");
    }
    List<Message> messages = new ArrayList<>(batch.getMessagesCount());
    for (int i = 0; i < batch.getMessagesCount(); i++) {
      TransportMessage m = batch.getMessages(i);
      if (!m.hasTime()) {
        throw new UndecodableBatchException("message " + i + " of the batch has no time");
      }
      try {
        messages.add(
            Message.builder()
                .id(m.getMessageId())
                .stream(m.getStreamName())
                .key(m.getStreamKey().isEmpty() ? null : m.getStreamKey())
                .headers(m.getHeadersMap())
                .contentType(m.getContentType())
                .ownedData(m.getData().toByteArray())
                .time(Instant.ofEpochSecond(m.getTime().getSeconds(), m.getTime().getNanos()))
                .build());
      } catch (InvalidMessageException | java.time.DateTimeException e) {
        throw new UndecodableBatchException(
            "message " + i + " of the batch is invalid: " + e.getMessage(), e);
      }
    }
    return List.copyOf(messages);
  }
}
