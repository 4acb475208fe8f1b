package dev.outbox.r2dbc;

/**
 * Root of every exception this library raises on purpose. Each subtype is named for what the
 * caller can do about it:
 *
 * <ul>
 *   <li>{@link InvalidMessageException}: fix the message or batch you passed;
 *   <li>{@link InvalidConfigurationException}: fix the option you set (table name, sizes, …);
 *   <li>{@link MissingConnectionException} and {@link NotInTransactionException}: call the
 *       writer inside your business transaction;
 *   <li>{@link UndecodableBatchException}: the stored bytes can never be read; the relay
 *       dead-letters such batches.
 * </ul>
 *
 * <p>Driver and broker errors (R2DBC, Kafka) are passed through unchanged so that their own
 * retry classification stays available.
 */
public abstract class OutboxException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  protected OutboxException(String message) {
    super(message);
  }

  protected OutboxException(String message, Throwable cause) {
    super(message, cause);
  }
}
