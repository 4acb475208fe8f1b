/**
 * Test support for applications: {@link dev.outbox.test.OutboxTestSupport} shows what the code
 * under test wrote to the outbox table, decoded, per batch and per transaction, without Kafka or
 * a relay. Use it in test scope only.
 */
@NullMarked
package dev.outbox.test;

import org.jspecify.annotations.NullMarked;
