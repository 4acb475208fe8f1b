package dev.outbox.r2dbc;

/** An option given to a builder or factory is invalid; the text names it and says what is allowed. */
public class InvalidConfigurationException extends OutboxException {
  private static final long serialVersionUID = 1L;

  public InvalidConfigurationException(String message) {
    super(message);
  }

  public InvalidConfigurationException(String message, Throwable cause) {
    super(message, cause);
  }
}
