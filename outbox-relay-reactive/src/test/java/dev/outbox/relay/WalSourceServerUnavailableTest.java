package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import io.r2dbc.spi.R2dbcBadGrammarException;
import io.r2dbc.spi.R2dbcNonTransientResourceException;
import io.r2dbc.spi.R2dbcTransientResourceException;
import org.junit.jupiter.api.Test;

/**
 * Which errors end a WAL run (its replication stream) rather than being tried again: the server
 * going away, not any server error (r2dbc-postgresql raises most of them as resource failures).
 */
class WalSourceServerUnavailableTest {

  @Test
  void theServerShuttingDownOrAFailedConnectionMakeItUnavailable() {
    assertThat(WalSource.serverUnavailable(
        new R2dbcNonTransientResourceException("terminating connection", "57P01"))).isTrue();
    assertThat(WalSource.serverUnavailable(
        new R2dbcNonTransientResourceException("the database system is shutting down", "57P03")))
        .isTrue();
    assertThat(WalSource.serverUnavailable(
        new R2dbcNonTransientResourceException("connection failure", "08006"))).isTrue();
    assertThat(WalSource.serverUnavailable(
        new R2dbcNonTransientResourceException("Connection validation failed"))).isTrue();
    assertThat(WalSource.serverUnavailable(
        new R2dbcTransientResourceException("Connection refused"))).isTrue();
    assertThat(WalSource.serverUnavailable(new IllegalStateException("wrapped",
        new R2dbcNonTransientResourceException("shutting down", "57P03")))).isTrue();
  }

  @Test
  void otherServerErrorsDoNot() {
    assertThat(WalSource.serverUnavailable(
        new R2dbcNonTransientResourceException("canceling statement due to statement timeout",
            "57014"))).as("a statement timeout, raised as a resource failure").isFalse();
    assertThat(WalSource.serverUnavailable(
        new R2dbcNonTransientResourceException("could not obtain lock", "55P03"))).isFalse();
    assertThat(WalSource.serverUnavailable(
        new R2dbcBadGrammarException("relation does not exist", "42P01"))).isFalse();
    assertThat(WalSource.serverUnavailable(new IllegalStateException("not a database error")))
        .isFalse();
  }

  @Test
  void aFailedSettlementEndsTheRunOnlyWhenTheServerSaysItIsShuttingDown() {
    assertThat(WalSource.serverShuttingDown(
        new R2dbcNonTransientResourceException("the database system is shutting down", "57P03")))
        .isTrue();
    assertThat(WalSource.serverShuttingDown(
        new R2dbcNonTransientResourceException("connection failure", "08006"))).isTrue();
    assertThat(WalSource.serverShuttingDown(
        new R2dbcNonTransientResourceException("terminating connection", "57P01")))
        .as("also one session ended by pg_terminate_backend").isFalse();
    assertThat(WalSource.serverShuttingDown(
        new R2dbcNonTransientResourceException("Connection validation failed")))
        .as("a pooled connection found dead: a fresh one decides").isFalse();
  }

  @Test
  void aCycleOfCausesEnds() {
    RuntimeException first = new RuntimeException("first");
    RuntimeException second = new RuntimeException("second", first);
    first.initCause(second);
    assertThat(WalSource.serverUnavailable(first)).isFalse();
  }
}
