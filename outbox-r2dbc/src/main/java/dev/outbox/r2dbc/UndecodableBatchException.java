package dev.outbox.r2dbc;

/**
 * Stored batch bytes could not be decoded into valid messages. Retrying cannot help; the relay
 * moves such batches to the dead-letter table with this text as the reason.
 */
public final class UndecodableBatchException extends OutboxException {
  private static final long serialVersionUID = 1L;

  public UndecodableBatchException(String message) {
    super(message);
  }

  public UndecodableBatchException(String message, Throwable cause) {
    super(message, cause);
  }
}
