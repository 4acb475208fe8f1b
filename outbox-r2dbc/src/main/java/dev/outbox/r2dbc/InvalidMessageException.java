package dev.outbox.r2dbc;

/** A message or batch is malformed (the text names the field); nothing was written. */
public class InvalidMessageException extends OutboxException {
  private static final long serialVersionUID = 1L;

  public InvalidMessageException(String message) {
    super(message);
  }
}
