package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Codec;
import dev.outbox.r2dbc.Ksuid;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxStore;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.StoredBatch;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.ConnectionFactory;
import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/**
 * README "Dead letters and re-drive", run against PostgreSQL. Kept small: only the operator
 * methods of {@code OutboxStore} that stay public are used.
 */
class ReadmeDeadLettersTest {
  private static final Logger log = LoggerFactory.getLogger(ReadmeDeadLettersTest.class);
  private final ReadmeServers servers = ReadmeServers.get();

  // tag::dead-letters[]
  Mono<Void> redriveAll(ConnectionFactory pool, OutboxTable table) {
    OutboxStore store = OutboxStore.create(pool, table);
    return store.deadLetters(100)
        .doOnNext(d -> log.warn("re-driving {}: {}", d.batchId(), d.reason()))
        .concatMap(d -> store.redrive(d.batchId()))          // back into the outbox, due at once
        .then();
  }

  Mono<Boolean> redriveFixed(OutboxStore store, String batchId, List<Message> fixedMessages) {
    return store.redrive(batchId, fixedMessages);           // count and keys follow the messages
  }
  // end::dead-letters[]

  private String deadLetter(String text) {
    String id = Ksuid.generate().toString();
    byte[] raw = Codec.protobuf().encode(List.of(
        Message.builder().stream("orders").data(text).build()));
    TestPostgres.get().execute("INSERT INTO " + servers.schema + ".order_outbox_dead_letter"
        + " (batch_id, message_count, write_retries, reason, raw_data, insert_time) VALUES ('"
        + id + "', 1, 3, 'broker said no', '\\x" + HexFormat.of().formatHex(raw) + "', now())");
    return id;
  }

  @Test
  void deadLettersGoBackIntoTheOutbox() {
    ConnectionPool pool = servers.newPool(2);
    try {
      OutboxStore store = OutboxStore.create(pool, ReadmeServers.TABLE);
      String first = deadLetter("first");
      String second = deadLetter("second");

      Message fixed = Message.builder().stream("orders").key("k").data("fixed").build();
      StepVerifier.create(redriveFixed(store, second, List.of(fixed, fixed.toBuilder().id(null).build())))
          .expectNext(true).verifyComplete();
      StepVerifier.create(redriveAll(pool, ReadmeServers.TABLE)).verifyComplete();

      assertThat(servers.count("SELECT count(*) FROM {schema}.order_outbox_dead_letter")).isZero();
      StoredBatch redriven = store.find(first).block(Duration.ofSeconds(30));
      assertThat(redriven).isNotNull();
      StoredBatch replaced = store.find(second).block(Duration.ofSeconds(30));
      assertThat(replaced).isNotNull();
      assertThat(replaced.messageCount()).isEqualTo(2);
    } finally {
      pool.dispose();
    }
  }
}
