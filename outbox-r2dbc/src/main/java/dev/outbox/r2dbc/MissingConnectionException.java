package dev.outbox.r2dbc;

/**
 * {@link OutboxWriter#write} found no R2DBC connection in the Reactor {@code Context}. Bind the
 * connection of your business transaction with {@code
 * .contextWrite(OutboxContext.withConnection(connection))}, run the work inside {@link
 * OutboxTransactions#inTransaction}, or register a {@link ConnectionResolver} for your
 * framework's transaction manager.
 */
public final class MissingConnectionException extends OutboxException {
  private static final long serialVersionUID = 1L;

  MissingConnectionException() {
    super(
        "No R2DBC Connection is bound in the Reactor Context. Bind the connection of your"
            + " business transaction with .contextWrite(OutboxContext.withConnection(connection)),"
            + " or run the work inside OutboxTransactions.inTransaction(connectionFactory, ...),"
            + " or configure a ConnectionResolver for your transaction manager.");
  }
}
