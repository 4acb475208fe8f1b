package dev.outbox.relay;

import java.time.Instant;
import java.util.Map;
import org.jspecify.annotations.Nullable;

/**
 * One Kafka record to send, with the caller's correlation object handed back in its {@link
 * SendResult}.
 *
 * @param topic the message's stream
 * @param key the partition key, {@code null} for none
 * @param value the payload (owned by this record; do not modify)
 * @param timestamp the message time
 * @param headers user headers plus {@code message_id} and {@code content_type}, as UTF-8
 * @param correlation identifies the record to the caller (batch and index for the relay)
 */
public record OutboundRecord<T>(
    String topic,
    @Nullable String key,
    byte[] value,
    Instant timestamp,
    Map<String, String> headers,
    T correlation) {}
