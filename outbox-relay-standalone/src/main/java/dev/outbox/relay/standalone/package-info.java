/**
 * The relay as a standalone process, for teams that deploy it as a sidecar rather than inside
 * their service: {@link dev.outbox.relay.standalone.RelayMain} reads its configuration from
 * {@code OUTBOX_*} environment variables ({@link dev.outbox.relay.standalone.StandaloneConfig}),
 * logs it with secrets masked, serves {@code GET /health} and {@code GET /metrics} (Prometheus)
 * and stops cleanly on SIGTERM.
 *
 * <pre>{@code
 * OUTBOX_DATABASE_URL=r2dbc:postgresql://relay:secret@db:5432/app \
 * OUTBOX_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 \
 * mvn -B -q -Prun -pl outbox-relay-standalone -am verify -DskipTests
 * }</pre>
 *
 * <p>With a subcommand the same program operates on the table instead of relaying ({@link
 * dev.outbox.relay.standalone.AdminCommands}): {@code dead-letters list|show|redrive|purge},
 * {@code backlog} and {@code wal-slot show|drop}, printing plain text and exiting 0, 1 or 2.
 *
 * <p>Embedded in another program, the same process is two calls:
 *
 * <pre>{@code
 * StandaloneRelay relay = StandaloneRelay.start(StandaloneConfig.fromEnvironment(System.getenv()));
 * ...
 * relay.stop(Duration.ofSeconds(10)).block(Duration.ofSeconds(15));
 * }</pre>
 */
@NullMarked
package dev.outbox.relay.standalone;

import org.jspecify.annotations.NullMarked;
