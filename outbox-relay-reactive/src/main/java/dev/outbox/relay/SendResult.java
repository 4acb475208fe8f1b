package dev.outbox.relay;

import org.jspecify.annotations.Nullable;

/**
 * The broker's answer for one {@link OutboundRecord}: acknowledged, or failed with {@code
 * error}.
 */
public record SendResult<T>(T correlation, @Nullable Throwable error) {
  public boolean acknowledged() {
    return error == null;
  }
}
