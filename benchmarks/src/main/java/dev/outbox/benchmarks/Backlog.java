package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.IntStream;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Writes a large backlog fast: {@code INSERT … SELECT … FROM generate_series}, with {@code
 * raw_data} spliced in SQL from a batch that {@link Codec#protobuf()} encoded once. The spliced
 * fields have fixed lengths (27-character message ids, 4-character keys), so every row is a valid
 * {@code TransportMessageBatch} that the relay decodes like one from {@code OutboxWriter}; the
 * first row is decoded and checked before returning.
 *
 * <p>Row {@code g} (1-based) has batch id {@code lpad(g, 27, '0')}; its message {@code j} has id
 * {@code lpad(g, 25, '0') || lpad(j, 2, '0')} (unique per backlog) and key {@code k<g mod 1000>};
 * all messages of a row share the key, as in {@link RelayBenchmark}.
 */
final class Backlog {
  private static final String ID_MARK = "Z".repeat(25);
  private static final String KEY_MARK = "QQQQ";
  private static final int ROWS_PER_STATEMENT = 50_000;

  private Backlog() {}

  /** The SQL of the message key of row {@code g}: 4 characters. */
  private static final String KEY_SQL = "('k' || lpad((g % 1000)::text, 3, '0'))";

  /**
   * Inserts {@code rows} rows of {@code perRow} messages with {@code payloadBytes}-byte payloads
   * into {@code table} (which must exist and be empty), then {@code VACUUM ANALYZE}s it.
   *
   * @return seconds spent inserting
   */
  static double fill(TestPostgres postgres, OutboxTable table, String topic, int rows, int perRow,
      int payloadBytes) {
    if (perRow < 1 || perRow > 99) {
      throw new IllegalArgumentException("perRow must be 1..99, got " + perRow);
    }
    byte[] payload = payload(payloadBytes);
    Instant time = Instant.now();
    List<Message> template = IntStream.range(0, perRow)
        .mapToObj(j -> Message.builder().id(ID_MARK + String.format(Locale.ROOT, "%02d", j))
            .stream(topic).key(KEY_MARK).data(payload).time(time).build())
        .toList();
    String rawSql = spliced(Codec.protobuf().encode(template), perRow);
    String insert = "INSERT INTO " + table.qualifiedName()
        + " (batch_id, message_count, raw_data, message_keys) SELECT lpad(g::text, 27, '0'), "
        + perRow + ", " + rawSql + ", ARRAY['" + topic + "' || chr(31) || " + KEY_SQL + "]"
        + " FROM generate_series(FIRST_ROW, LAST_ROW) AS g";
    ConnectionFactory connections = postgres.connectionFactory();
    long t0 = System.nanoTime();
    Flux.range(0, (rows + ROWS_PER_STATEMENT - 1) / ROWS_PER_STATEMENT)
        .flatMap(chunk -> {
          String sql = insert.replace("FIRST_ROW", Long.toString(chunk * (long) ROWS_PER_STATEMENT + 1))
              .replace("LAST_ROW", Long.toString(Math.min(rows, (chunk + 1L) * ROWS_PER_STATEMENT)));
          return Mono.usingWhen(connections.create(),
              c -> Flux.from(c.createStatement(sql).execute()).concatMap(r -> r.getRowsUpdated()).then(),
              Connection::close);
        }, 2)
        .blockLast();
    double seconds = (System.nanoTime() - t0) / 1e9;
    postgres.execute("VACUUM ANALYZE " + table.qualifiedName());
    check(postgres, table, topic, rows, perRow, payload);
    return seconds;
  }

  /** Payload bytes that cannot contain the markers. */
  private static byte[] payload(int size) {
    byte[] payload = new byte[size];
    for (int i = 0; i < size; i++) {
      payload[i] = (byte) ('a' + ThreadLocalRandom.current().nextInt(16));
    }
    return payload;
  }

  /** An SQL bytea expression of {@code raw} with each marker replaced by its per-row value. */
  private static String spliced(byte[] raw, int perRow) {
    byte[] id = ID_MARK.getBytes(StandardCharsets.US_ASCII);
    byte[] key = KEY_MARK.getBytes(StandardCharsets.US_ASCII);
    List<String> parts = new ArrayList<>();
    int ids = 0;
    int keys = 0;
    int last = 0;
    int i = 0;
    while (i < raw.length) {
      boolean isId = matches(raw, i, id);
      boolean isKey = !isId && matches(raw, i, key);
      if (isId || isKey) {
        parts.add(hex(Arrays.copyOfRange(raw, last, i)));
        parts.add(isId ? "convert_to(lpad(g::text, 25, '0'), 'UTF8')" : "convert_to(" + KEY_SQL + ", 'UTF8')");
        ids += isId ? 1 : 0;
        keys += isKey ? 1 : 0;
        i += isId ? id.length : key.length;
        last = i;
      } else {
        i++;
      }
    }
    parts.add(hex(Arrays.copyOfRange(raw, last, raw.length)));
    if (ids != perRow || keys != perRow) {
      throw new IllegalStateException("Template has " + ids + " id and " + keys
          + " key markers, expected " + perRow + " of each");
    }
    return "(" + String.join(" || ", parts) + ")";
  }

  private static boolean matches(byte[] raw, int at, byte[] mark) {
    if (at + mark.length > raw.length) {
      return false;
    }
    for (int k = 0; k < mark.length; k++) {
      if (raw[at + k] != mark[k]) {
        return false;
      }
    }
    return true;
  }

  private static String hex(byte[] bytes) {
    return "'\\x" + HexFormat.of().formatHex(bytes) + "'::bytea";
  }

  /** Decodes the last row as the relay would, and checks the row count. */
  private static void check(TestPostgres postgres, OutboxTable table, String topic, int rows,
      int perRow, byte[] payload) {
    long count = postgres.queryLong("SELECT count(*) FROM " + table.qualifiedName());
    if (count != rows) {
      throw new IllegalStateException("Backlog has " + count + " rows, expected " + rows);
    }
    Object raw = postgres.queryColumn("SELECT raw_data FROM " + table.qualifiedName()
        + " WHERE batch_id = lpad('" + rows + "', 27, '0')").get(0);
    byte[] bytes;
    if (raw instanceof ByteBuffer buffer) {
      bytes = new byte[buffer.remaining()];
      buffer.get(bytes);
    } else {
      bytes = (byte[]) raw;
    }
    List<Message> decoded = Codec.protobuf().decode(bytes);
    String expectedId = String.format(Locale.ROOT, "%025d%02d", rows, perRow - 1);
    String expectedKey = String.format(Locale.ROOT, "k%03d", rows % 1000);
    Message m = decoded.get(decoded.size() - 1);
    if (decoded.size() != perRow || !m.id().equals(expectedId) || !m.stream().equals(topic)
        || !m.key().orElse("").equals(expectedKey) || !Arrays.equals(m.data(), payload)) {
      throw new IllegalStateException("Backlog row " + rows + " decodes to " + decoded.size()
          + " messages, last " + m + "; expected id " + expectedId + ", key " + expectedKey);
    }
  }
}
