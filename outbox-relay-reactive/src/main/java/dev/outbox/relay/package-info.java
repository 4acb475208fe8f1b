/**
 * The relay: claims committed outbox batches and publishes them to Kafka. See the README.
 */
@NullMarked
package dev.outbox.relay;

import org.jspecify.annotations.NullMarked;
