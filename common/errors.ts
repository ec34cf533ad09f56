/**
 * Errors a user can act on. The CLI prints their message as one sentence and
 * exits with their status; anything else is a bug and keeps its stack trace.
 */

/** Bad data or a runtime failure the user can fix: exit status 1. */
export class DataError extends Error {
  readonly exitCode = 1;
  constructor(message: string) {
    super(message);
    this.name = "DataError";
  }
}

/** Bad command-line usage: exit status 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** True for the errors whose message is meant for the user. */
export function isUserError(error: unknown): error is DataError | UsageError {
  return error instanceof DataError || error instanceof UsageError;
}

/** The message of any thrown value, for wrapping library errors in a DataError. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
