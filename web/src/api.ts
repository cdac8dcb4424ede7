// The page's one way to the suite: the generated OrchestratorService client over grpc-web,
// and a reading of the server's google.rpc.Status details into something a form can show.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { OrchestratorService } from "./gen/debate/orchestrator/v1/orchestrator_pb";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb";

export type Orchestrator = Client<typeof OrchestratorService>;

/** The gateway's base URL: `?api=` wins, then the page's meta tag, then this page's origin. */
export function apiBaseUrl(): string {
  const fromQuery = new URLSearchParams(window.location.search).get("api");
  if (fromQuery) return fromQuery.replace(/\/$/, "");
  const meta = document.querySelector<HTMLMetaElement>('meta[name="debate-api-base"]')?.content;
  if (meta) return meta.replace(/\/$/, "");
  return window.location.origin;
}

const API_KEY_STORAGE = "debate-engine.api-key";

/** The API key for suites that require one (API_KEYS); kept for this browser tab only. */
export function apiKey(): string {
  return window.sessionStorage.getItem(API_KEY_STORAGE) ?? "";
}

export function setApiKey(key: string): void {
  if (key) window.sessionStorage.setItem(API_KEY_STORAGE, key);
  else window.sessionStorage.removeItem(API_KEY_STORAGE);
}

export const bearer: Interceptor = (next) => (request) => {
  const key = apiKey();
  if (key) request.header.set("authorization", `Bearer ${key}`);
  return next(request);
};

export function orchestrator(baseUrl: string = apiBaseUrl()): Orchestrator {
  return createClient(OrchestratorService, createGrpcWebTransport({ baseUrl, interceptors: [bearer] }));
}

export interface FieldViolation {
  field: string;
  description: string;
}

export interface ServerError {
  code: Code;
  codeName: string;
  message: string;
  reason: string;
  violations: FieldViolation[];
}

export function readError(error: unknown): ServerError {
  const err = ConnectError.from(error);
  const info = err.findDetails(ErrorInfoSchema)[0];
  const violations = err
    .findDetails(BadRequestSchema)
    .flatMap((bad) => bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
  return {
    code: err.code,
    codeName: Code[err.code] ?? "Unknown",
    message: err.rawMessage || err.message,
    reason: info?.reason ?? "",
    violations,
  };
}

/** Errors after which a stream is worth opening again (the gateway or the network dropped it). */
export function isTransient(error: unknown): boolean {
  const err = ConnectError.from(error);
  // A subscriber that fell behind is told to resume with after_sequence.
  if (err.findDetails(ErrorInfoSchema).some((info) => info.reason === "SUBSCRIBER_TOO_SLOW")) return true;
  const code = err.code;
  return [Code.Unavailable, Code.Unknown, Code.Internal, Code.DeadlineExceeded, Code.Aborted, Code.Canceled].includes(code);
}

/** A request id that works on plain http too (crypto.randomUUID needs a secure context). */
export function newRequestId(): string {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
