package dev.outbox.r2dbc;

/**
 * A table name is not {@code identifier} or {@code schema.identifier}. Raised before any SQL is
 * built, so a hostile name never reaches the database.
 */
public final class InvalidTableNameException extends InvalidConfigurationException {
  private static final long serialVersionUID = 1L;

  public InvalidTableNameException(String message) {
    super(message);
  }
}
