package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestPostgres;
import io.r2dbc.pool.ConnectionPool;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import reactor.test.StepVerifier;

/**
 * README "Rows their writers delete once logged": the writer inserts its row while no slot would
 * carry it (no slot, or a publication no relay that reads messages has marked), and logs the
 * batch as a message only once the relay's slot and marked publication are ready, the log
 * holding its only copy. (The relay's side is tested in {@code RelayWalTest}.)
 */
class ReadmeWalWriterTest {
  private final ReadmeServers servers = ReadmeServers.get();

  // tag::delete-once-logged[]
  OutboxWriter writer = OutboxWriter.builder()
      .table(OutboxTable.of("order_outbox"))
      .deleteOnceLogged(true) // the relay's slot and publication: order_outbox_relay
      .build();
  // end::delete-once-logged[]

  private long rows() {
    return servers.count("SELECT count(*) FROM {schema}.order_outbox");
  }

  private void write(ConnectionPool pool, String text) {
    StepVerifier.create(OutboxTransactions.inTransaction(pool, c -> writer.write(
        Message.builder().stream(ReadmeServers.TOPIC).key("k").data(text).build())))
        .verifyComplete();
  }

  @Test
  void theWriterLogsItsBatchOnlyOnceTheSlotWillCarryIt() {
    TestPostgres postgres = TestPostgres.get();
    ConnectionPool pool = servers.newPool(2);
    try {
      long before = rows();
      write(pool, "no slot yet");
      assertThat(rows()).as("kept while no slot would carry it").isEqualTo(before + 1);

      postgres.execute("CREATE PUBLICATION order_outbox_relay FOR TABLE " + servers.schema
              + ".order_outbox WITH (publish = 'insert, delete')",
          "SELECT pg_create_logical_replication_slot('order_outbox_relay', 'pgoutput')");
      try {
        write(pool, "unmarked");
        assertThat(rows()).as("kept: no relay that reads messages marked the publication")
            .isEqualTo(before + 2);
        // What a WAL relay of this version does at start.
        postgres.execute("COMMENT ON PUBLICATION order_outbox_relay IS '"
            + dev.outbox.r2dbc.internal.LoggedBatch.READER_MARK + "'");
        write(pool, "logged");
        assertThat(rows()).as("logged only: no row").isEqualTo(before + 2);
        // Decoded once flushed: the test server commits with synchronous_commit=off.
        Poll.until("the slot holds the batch as a message (M) of the slot's prefix",
            Duration.ofSeconds(15), () -> postgres.queryLong("SELECT count(*) FROM"
                + " pg_logical_slot_peek_binary_changes('order_outbox_relay', NULL, NULL,"
                + " 'proto_version', '1', 'publication_names', 'order_outbox_relay',"
                + " 'messages', 'true') WHERE get_byte(data, 0) = 77"
                + " AND position(convert_to('dev.outbox:order_outbox_relay', 'UTF8') IN data) > 0")
                == 1);
      } finally {
        postgres.execute("SELECT pg_drop_replication_slot('order_outbox_relay')",
            "DROP PUBLICATION order_outbox_relay");
      }
    } finally {
      pool.dispose();
    }
  }
}
