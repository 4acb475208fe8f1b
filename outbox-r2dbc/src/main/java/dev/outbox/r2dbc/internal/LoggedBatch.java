package dev.outbox.r2dbc.internal;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.List;

/**
 * Internal: not part of the public API. A batch written to the WAL only, as a transactional
 * logical decoding message ({@code pg_logical_emit_message(true, prefix, content)}), by a writer
 * with {@code deleteOnceLogged}: one WAL record where a row inserted and deleted again logs
 * eight (heap insert, five index entries, delete, and the transaction's commit besides), and
 * nothing for the relay to delete. The relay's slot decodes it with its transaction, in commit
 * order, like an insert.
 *
 * <p>Content, big-endian: a format byte ({@value #FORMAT}); {@code batch_id} (int length, UTF-8);
 * {@code message_count} (int); {@code insert_time} (long, microseconds since the Unix epoch, by
 * the writer's clock: the one time of a logged batch not taken from the database); the
 * message keys (int count, then each as int length and UTF-8); {@code raw_data} (int length,
 * bytes). Thread-safe: stateless.
 */
public final class LoggedBatch {
  /** The content format this version writes and reads. */
  public static final byte FORMAT = 1;
  /**
   * The comment a WAL relay that reads these messages puts on its publication (when it has
   * none): writers log batches only once it is there, so writers upgraded before their relay
   * keep inserting rows rather than logging messages nothing reads.
   */
  public static final String READER_MARK =
      "dev.outbox: a WAL relay that reads batches logged as messages (format 1) streams this";

  private LoggedBatch() {}

  /**
   * The message prefix for a slot: every logical slot of the database decodes every message, so
   * the prefix names the one relay (slot) it is for.
   */
  public static String prefix(String slot) {
    return "dev.outbox:" + slot;
  }

  /** The content of a batch's message. */
  public static byte[] encode(String batchId, int messageCount, Instant insertTime,
      String[] keys, byte[] rawData) {
    byte[] id = batchId.getBytes(StandardCharsets.UTF_8);
    byte[][] keyBytes = new byte[keys.length][];
    int size = 1 + 4 + id.length + 4 + 8 + 4 + 4 + rawData.length;
    for (int i = 0; i < keys.length; i++) {
      keyBytes[i] = keys[i].getBytes(StandardCharsets.UTF_8);
      size += 4 + keyBytes[i].length;
    }
    ByteBuffer out = ByteBuffer.allocate(size);
    out.put(FORMAT);
    out.putInt(id.length).put(id);
    out.putInt(messageCount);
    out.putLong(ChronoUnit.MICROS.between(Instant.EPOCH, insertTime));
    out.putInt(keys.length);
    for (byte[] key : keyBytes) {
      out.putInt(key.length).put(key);
    }
    out.putInt(rawData.length).put(rawData);
    return out.array();
  }

  /**
   * Reads a message's content from {@code in} (its position at the content, {@code length}
   * bytes); the row as a relay publishes it, {@link RelayStore#LOGGED_ONLY}.
   *
   * @throws IllegalArgumentException when the content is not in this format
   */
  public static Decoded decode(ByteBuffer in, int length) {
    int end = in.position() + length;
    try {
      byte format = in.get();
      if (format != FORMAT) {
        throw new IllegalArgumentException("unknown outbox message format " + format
            + " (this relay reads format " + FORMAT + "; a newer writer wrote it?)");
      }
      String batchId = string(in);
      int messageCount = in.getInt();
      Instant insertTime = Instant.EPOCH.plus(in.getLong(), ChronoUnit.MICROS);
      int keyCount = in.getInt();
      if (keyCount < 0 || keyCount > length) {
        throw new IllegalArgumentException("bad key count " + keyCount);
      }
      List<String> keys = new ArrayList<>(keyCount);
      for (int i = 0; i < keyCount; i++) {
        keys.add(string(in));
      }
      int rawLength = in.getInt();
      if (rawLength < 0 || in.position() + rawLength != end) {
        throw new IllegalArgumentException("raw_data of " + rawLength + " bytes does not end"
            + " the message");
      }
      byte[] rawData = new byte[rawLength];
      in.get(rawData);
      ClaimedBatch row = new ClaimedBatch(batchId, 0, messageCount, 0, rawData, insertTime,
          RelayStore.LOGGED_ONLY, insertTime);
      return new Decoded(row, List.copyOf(keys));
    } catch (java.nio.BufferUnderflowException | IndexOutOfBoundsException e) {
      throw new IllegalArgumentException("outbox message of " + length + " bytes is cut short", e);
    }
  }

  private static String string(ByteBuffer in) {
    int length = in.getInt();
    if (length < 0 || length > in.remaining()) {
      throw new IllegalArgumentException("bad string length " + length);
    }
    byte[] bytes = new byte[length];
    in.get(bytes);
    return new String(bytes, StandardCharsets.UTF_8);
  }

  /** A decoded message: the row ({@code insert_seq} 0: none was drawn) and its keys. */
  public record Decoded(ClaimedBatch row, List<String> keys) {}
}
