package dev.outbox.r2dbc;

import java.util.List;

/**
 * Turns a batch of messages into the bytes stored in one outbox row ({@code raw_data}) and back.
 *
 * <p>The default, {@link #protobuf()}, is wire-compatible with the original Go {@code streams}
 * package. Implementations must be thread-safe and must not block.
 */
public interface Codec {

  /** Encodes a non-empty batch. */
  byte[] encode(List<Message> batch);

  /**
   * Decodes stored bytes.
   *
   * @throws UndecodableBatchException when the bytes are not a valid, non-empty batch of valid
   *     messages; retrying cannot help
   */
  List<Message> decode(byte[] raw);

  /** The protobuf codec of the {@code streams.TransportMessageBatch} format. */
  static Codec protobuf() {
    return ProtobufCodec.INSTANCE;
  }
}
