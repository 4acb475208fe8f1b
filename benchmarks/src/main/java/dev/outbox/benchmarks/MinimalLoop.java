package dev.outbox.benchmarks;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.producer.ProducerRecord;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;

/**
 * The floor the relay is measured against: the least a correct drain must do, with none of the
 * relay's machinery. One reader walks the table in insert order ({@code insert_seq}, keyset
 * pages of 500 rows, raw data as base64 text as the relay reads it), decodes each row with the
 * library's codec, sends its records through one {@link KafkaSender} with the relay's producer
 * settings and in-flight limit, and deletes rows in groups once Kafka acknowledged their last
 * record; the next page is read while the previous one is being sent.
 *
 * <p>What it leaves out, and the relay must not: ownership and fencing (a single reader), the
 * commit watermark (the backlog is fully committed before it starts), retries, dead letters,
 * per-key holding across failures, validation of topics and record sizes, metrics.
 */
final class MinimalLoop {
  private static final int PAGE = 500;
  private static final int DELETE_GROUP = 500;

  private MinimalLoop() {}

  /** Seconds to publish and delete every row of {@code table}. */
  static double drainSeconds(ConnectionPool pool, OutboxTable table, Map<String, Object> producer,
      int maxInFlight) {
    String read = "SELECT insert_seq, encode(raw_data, 'base64') AS raw FROM " + table.qualifiedName()
        + " WHERE insert_seq > $1 ORDER BY insert_seq LIMIT " + PAGE;
    String delete = "DELETE FROM " + table.qualifiedName() + " WHERE insert_seq = ANY($1)";
    Codec codec = Codec.protobuf();
    AtomicLong cursor = new AtomicLong(Long.MIN_VALUE);
    KafkaSender<String, byte[]> sender = KafkaSender.create(
        SenderOptions.<String, byte[]>create(RelayBenchmark.withRelayProducerDefaults(producer))
            .maxInFlight(maxInFlight));
    try {
      long t0 = System.nanoTime();
      Flux<SenderRecord<String, byte[], Long>> records = Mono.defer(() -> page(pool, read, cursor.get()))
          .repeat()
          .takeWhile(rows -> !rows.isEmpty())
          .doOnNext(rows -> cursor.set(rows.get(rows.size() - 1).seq()))
          // prefetch 1: one page read ahead of the sends, no more
          .concatMapIterable(rows -> toRecords(rows, codec), 1);
      long deleted = sender.send(records)
          .handle((result, sink) -> {
            if (result.exception() != null) {
              sink.error(result.exception());
            } else if (result.correlationMetadata() != null) {
              sink.next(result.correlationMetadata());
            }
          })
          .cast(Long.class)
          .buffer(DELETE_GROUP)
          .flatMap(seqs -> Mono.usingWhen(pool.create(),
              c -> Mono.from(c.createStatement(delete).bind(0, seqs.toArray(Long[]::new)).execute())
                  .flatMap(r -> Mono.from(r.getRowsUpdated())),
              Connection::close), 2)
          .reduce(0L, Long::sum)
          .block();
      double seconds = (System.nanoTime() - t0) / 1e9;
      System.out.println("minimal loop deleted " + deleted + " rows");
      return seconds;
    } finally {
      sender.close();
    }
  }

  private record Row(long seq, byte[] raw) {}

  private static Mono<List<Row>> page(ConnectionPool pool, String read, long after) {
    return Mono.usingWhen(pool.create(),
        c -> Flux.from(c.createStatement(read).bind(0, after).execute())
            .flatMap(r -> r.map((row, meta) -> new Row(row.get(0, Long.class),
                Base64.getMimeDecoder().decode(row.get(1, String.class)))))
            .collectList(),
        Connection::close);
  }

  /** A row's records; the last one carries the row's {@code insert_seq} (its acknowledgement settles the row). */
  private static List<SenderRecord<String, byte[], Long>> toRecords(List<Row> rows, Codec codec) {
    List<SenderRecord<String, byte[], Long>> records = new ArrayList<>();
    for (Row row : rows) {
      List<Message> messages = codec.decode(row.raw());
      for (int i = 0; i < messages.size(); i++) {
        Message m = messages.get(i);
        ProducerRecord<String, byte[]> record = new ProducerRecord<>(m.stream(), null,
            m.time().toEpochMilli(), m.key().orElse(null), m.data());
        m.headers().forEach((k, v) -> record.headers().add(k, v.getBytes(StandardCharsets.UTF_8)));
        record.headers().add(Message.MESSAGE_ID_HEADER, m.id().getBytes(StandardCharsets.UTF_8));
        record.headers().add(Message.CONTENT_TYPE_HEADER, m.contentType().getBytes(StandardCharsets.UTF_8));
        records.add(SenderRecord.create(record, i == messages.size() - 1 ? row.seq() : null));
      }
    }
    return records;
  }
}
