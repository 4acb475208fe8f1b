package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;

class OutboxTableTest {

  @Test
  void acceptsIdentifiersAndSchemaQualifiedNames() {
    assertThat(OutboxTable.of("streams_egress").qualifiedName()).isEqualTo("streams_egress");
    OutboxTable t = OutboxTable.of("App.Order_Outbox");
    assertThat(t.qualifiedName()).isEqualTo("app.order_outbox");
    assertThat(t.name()).isEqualTo("order_outbox");
    assertThat(t.schema()).contains("app");
    assertThat(t.deadLetterQualifiedName()).isEqualTo("app.order_outbox_dead_letter");
  }

  @ParameterizedTest
  @ValueSource(strings = {"x; drop table y", "x;drop table y", "\"quoted\"", "a.b.c", "1abc", "",
      " ", "a-b", "a b", "a.", ".a", "x'--", "x/*y*/", "t\u0000", "tåble",
      "a_name_that_is_far_too_long_for_postgresql_to_keep_as_it_is"})
  void rejectsAnythingElse(String name) {
    assertThatThrownBy(() -> OutboxTable.of(name))
        .isInstanceOf(InvalidTableNameException.class)
        .isInstanceOf(InvalidConfigurationException.class)
        .hasMessageContaining("identifier");
  }

  @Test
  void rejectsNull() {
    assertThatThrownBy(() -> OutboxTable.of(null)).isInstanceOf(InvalidTableNameException.class);
  }

  @Test
  void schemaStatementsUseTheConfiguredName() {
    var statements = OutboxSchema.statements(OutboxTable.of("app.orders_outbox"));
    // the adoption DO block (one statement), V1 (4), V2 (3), V3 (partitions), V4 (1)
    assertThat(statements).hasSize(8 + OutboxSchema.partitionStatements(OutboxTable.of("x")).size() + 1)
        .containsAll(OutboxSchema.partitionStatements(OutboxTable.of("app.orders_outbox")));
    assertThat(String.join("\n", statements))
        .contains("CREATE TABLE IF NOT EXISTS app.orders_outbox (")
        .contains("CONSTRAINT orders_outbox_pkey PRIMARY KEY")
        .contains("CREATE UNIQUE INDEX IF NOT EXISTS orders_outbox_insert_seq_idx ON app.orders_outbox")
        .contains("CREATE TABLE IF NOT EXISTS app.orders_outbox_dead_letter (")
        .contains("CREATE TABLE IF NOT EXISTS app.orders_outbox_partitions (")
        .contains("INSERT INTO app.orders_outbox_partitions")
        .contains("CREATE TABLE IF NOT EXISTS app.orders_outbox_relays (")
        .contains("CREATE INDEX IF NOT EXISTS orders_outbox_part_seq_idx ON app.orders_outbox")
        .contains("ALTER TABLE app.orders_outbox SET (toast_tuple_target = 8160)")
        .doesNotContain("streams_egress");
  }
}
