/**
 * Test harness shared by the modules' suites: one embedded PostgreSQL and one in-JVM Kafka
 * broker per test JVM, and BlockHound for the whole suite. Blocking helpers here are for test
 * threads only.
 */
@NullMarked
package dev.outbox.testing;

import org.jspecify.annotations.NullMarked;
