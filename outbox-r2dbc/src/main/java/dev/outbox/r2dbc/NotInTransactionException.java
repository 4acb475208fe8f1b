package dev.outbox.r2dbc;

/**
 * The bound connection is in auto-commit mode. An outbox row written outside the business
 * transaction could commit without the business change (or survive its rollback), which
 * defeats the pattern; begin a transaction first.
 */
public final class NotInTransactionException extends OutboxException {
  private static final long serialVersionUID = 1L;

  NotInTransactionException() {
    super(
        "The bound R2DBC Connection is in auto-commit mode (no transaction is open). Call"
            + " connection.beginTransaction() before writing, or use"
            + " OutboxTransactions.inTransaction(...), so the outbox row commits or rolls back"
            + " together with your business change.");
  }
}
