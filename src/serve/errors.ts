// Errors that reach an HTTP client. Every one carries the status to answer with and, for request validation, the
// offending field, so a client can tell which part of its body was wrong. Bodies follow OpenAI's error shape.

export type ApiErrorType =
  | 'invalid_request_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'unavailable_error';

export class ApiError extends Error {
  readonly status: number;
  readonly type: ApiErrorType;
  readonly param: string | null;
  /** Seconds a client should wait before retrying (429 and 503 only). */
  readonly retryAfter: number | null;

  constructor(status: number, message: string, opts: { param?: string | null; type?: ApiErrorType; retryAfter?: number } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.param = opts.param ?? null;
    this.type = opts.type ?? defaultType(status);
    this.retryAfter = opts.retryAfter ?? null;
  }

  toBody(): { error: { message: string; type: ApiErrorType; param: string | null; code: number } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.status } };
  }
}

function defaultType(status: number): ApiErrorType {
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'unavailable_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/** A 400 naming the field at fault; the message always starts with the field so logs read well too. */
export function badField(param: string, problem: string): ApiError {
  return new ApiError(400, `${param}: ${problem}`, { param });
}
