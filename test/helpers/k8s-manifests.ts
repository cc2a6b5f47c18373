// Validates Kubernetes manifests offline against the Kubernetes API schemas of the
// `kubernetes-models` package (pinned in package.json): each document's apiVersion and kind pick
// the model, whose validator is the API's OpenAPI schema compiled by ajv — types, enums, required
// fields, formats. The OpenAPI schema allows unknown fields (the API server prunes or rejects them
// later), so a misspelt field would pass it; the package's TypeScript declarations of the same
// types are exact, so each document is also type-checked as an object literal of its kind's
// interface, where every unknown field is an error. Every problem names the file, the document and
// the field's path.

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, relative } from "node:path";
import ts from "typescript";
import { parseAllDocuments } from "yaml";

export interface Manifest {
  /** File the document came from (as given), and its index in the file. */
  file: string;
  index: number;
  doc: Record<string, unknown>;
}

export interface Problem {
  file: string;
  index: number;
  /** `kind/name` of the document, when it has them. */
  what: string;
  /** JSON path of the field, e.g. `/spec/template/spec/containers/0/args`. */
  path: string;
  message: string;
}

export const describeProblem = (p: Problem) => `${p.file} [document ${p.index}] ${p.what} ${p.path || "/"}: ${p.message}`;

/** Every `*.yaml` under `dir`, in name order. */
export function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...yamlFiles(p));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out;
}

/** The documents of a YAML text (empty ones skipped); a YAML error is a problem of the file. */
export function parseManifests(file: string, text: string): { manifests: Manifest[]; problems: Problem[] } {
  const manifests: Manifest[] = [];
  const problems: Problem[] = [];
  parseAllDocuments(text).forEach((d, index) => {
    for (const e of d.errors) problems.push({ file, index, what: "", path: "", message: `YAML: ${e.message}` });
    const doc = d.toJS() as unknown;
    if (doc === null || doc === undefined) return;
    if (typeof doc !== "object" || Array.isArray(doc)) problems.push({ file, index, what: "", path: "", message: "not a Kubernetes object (a mapping)" });
    else manifests.push({ file, index, doc: doc as Record<string, unknown> });
  });
  return { manifests, problems };
}

const requireHere = createRequire(import.meta.url);

/** The kubernetes-models module of a document's apiVersion and kind (`apps/v1` + `StatefulSet` → `kubernetes-models/apps/v1/StatefulSet`). */
function modelModule(m: Manifest): string | null {
  const { apiVersion, kind } = m.doc;
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  const id = `kubernetes-models/${apiVersion}/${kind}`;
  try {
    requireHere.resolve(id);
    return id;
  } catch {
    return null;
  }
}

const whatOf = (m: Manifest) => `${String(m.doc.kind ?? "?")}/${String((m.doc.metadata as { name?: unknown } | undefined)?.name ?? "?")}`;

interface AjvError {
  instancePath: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** The OpenAPI schema check of each document. */
export async function schemaProblems(manifests: readonly Manifest[]): Promise<Problem[]> {
  const out: Problem[] = [];
  for (const m of manifests) {
    const id = modelModule(m);
    if (id === null) {
      out.push({ file: m.file, index: m.index, what: whatOf(m), path: "/kind", message: `no Kubernetes API type for apiVersion ${String(m.doc.apiVersion)}, kind ${String(m.doc.kind)}` });
      continue;
    }
    const mod = (await import(id)) as Record<string, new (data: unknown) => { validate(): void }>;
    const Model = mod[String(m.doc.kind)] as new (data: unknown) => { validate(): void };
    try {
      new Model(m.doc).validate();
    } catch (e) {
      const errors = (e as { errors?: AjvError[] }).errors;
      if (!errors) throw e;
      for (const x of errors) {
        const extra = x.params && "missingProperty" in x.params ? ` (${String(x.params.missingProperty)})` : x.params && "allowedValues" in x.params ? ` (${JSON.stringify(x.params.allowedValues)})` : "";
        out.push({ file: m.file, index: m.index, what: whatOf(m), path: x.instancePath, message: `${x.message ?? "invalid"}${extra}` });
      }
    }
  }
  return out;
}

/**
 * The exact-type check: every document as an object literal of its kind's interface, in one
 * TypeScript program. Each property is written on its own line and its JSON path recorded, so a
 * diagnostic's position maps back to the field.
 */
export function typeProblems(manifests: readonly Manifest[]): Problem[] {
  const root = join(requireHere.resolve("kubernetes-models"), "..", "..", ".."); // the directory holding node_modules
  const virtual = join(root, "__k8s_manifests_check__.ts");
  const lines: string[] = [];
  const at: { offset: number; m: Manifest; path: string }[] = [];
  let offset = 0;
  const emit = (line: string, mark?: { m: Manifest; path: string }) => {
    if (mark) at.push({ offset, ...mark });
    lines.push(line);
    offset += line.length + 1;
  };
  const checked = manifests.filter((m) => modelModule(m) !== null);
  checked.forEach((m, i) => {
    const kind = String(m.doc.kind);
    emit(`import type { I${kind} as T${i} } from ${JSON.stringify(modelModule(m))};`);
    emit(`export const d${i}: T${i} =`, { m, path: "" });
    literal(m.doc, m, "", emit);
    emit(";");
  });
  const text = lines.join("\n");
  const options: ts.CompilerOptions = { strict: true, noEmit: true, skipLibCheck: true, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022, types: [] };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === virtual ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === virtual || fileExists(name);
  const program = ts.createProgram([virtual], options, host);
  const out: Problem[] = [];
  const problemAt = (start: number, message: string) => {
    const mark = at.filter((a) => a.offset <= start).pop();
    if (mark) out.push({ file: mark.m.file, index: mark.m.index, what: whatOf(mark.m), path: mark.path, message: message.replace(/\bT\d+\b/g, String(mark.m.doc.kind)) });
  };
  for (const d of ts.getPreEmitDiagnostics(program)) {
    // Unknown fields are reported below, every one of them (TypeScript stops at the first per document).
    if (d.file?.fileName !== virtual || d.start === undefined || d.code === EXCESS_PROPERTY) continue;
    problemAt(d.start, ts.flattenDiagnosticMessageText(d.messageText, " "));
  }
  const source = program.getSourceFile(virtual);
  if (source) unknownFields(source, program.getTypeChecker(), problemAt);
  return out;
}

/** "Object literal may only specify known properties". */
const EXCESS_PROPERTY = 2353;

/** Every property of an object literal that the type it is checked against does not have. */
function unknownFields(source: ts.SourceFile, checker: ts.TypeChecker, report: (start: number, message: string) => void): void {
  const has = (t: ts.Type, name: string): boolean =>
    t.isUnion() ? t.types.some((u) => !(u.flags & (ts.TypeFlags.Undefined | ts.TypeFlags.Null)) && has(u, name)) : checker.getPropertyOfType(t, name) !== undefined || checker.getIndexInfosOfType(t).length > 0;
  const visit = (node: ts.Node): void => {
    if (ts.isObjectLiteralExpression(node)) {
      const t = checker.getContextualType(node);
      if (t)
        for (const p of node.properties) {
          if (!ts.isPropertyAssignment(p) || !ts.isStringLiteral(p.name)) continue;
          if (!has(t, p.name.text)) report(p.getStart(source), `unknown field ${JSON.stringify(p.name.text)} (${checker.typeToString(checker.getNonNullableType(t))} has no such property)`);
        }
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
}

/** A JSON value as TypeScript, one property or element per line, each line's path recorded. */
function literal(v: unknown, m: Manifest, path: string, emit: (line: string, mark?: { m: Manifest; path: string }) => void): void {
  if (Array.isArray(v)) {
    emit("[");
    v.forEach((x, i) => {
      emit(`/* ${path}/${i} */`, { m, path: `${path}/${i}` });
      literal(x, m, `${path}/${i}`, emit);
      emit(",");
    });
    emit("]");
  } else if (v !== null && typeof v === "object") {
    emit("{");
    for (const [k, x] of Object.entries(v)) {
      const p = `${path}/${k.replace(/~/g, "~0").replace(/\//g, "~1")}`;
      emit(`${JSON.stringify(k)}:`, { m, path: p });
      literal(x, m, p, emit);
      emit(",");
    }
    emit("}");
  } else emit(JSON.stringify(v === undefined ? null : v));
}

/** Every problem of the given files (schema and exact types), each named by file, document and path. */
export async function validateFiles(files: readonly { file: string; text: string }[]): Promise<Problem[]> {
  const all = files.map((f) => parseManifests(f.file, f.text));
  const manifests = all.flatMap((x) => x.manifests);
  return [...all.flatMap((x) => x.problems), ...(await schemaProblems(manifests)), ...typeProblems(manifests)];
}

/** The files under `dir`, named relative to `base`. */
export function readManifestDir(dir: string, base: string): { file: string; text: string }[] {
  if (!existsSync(dir)) return [];
  return yamlFiles(dir).map((p) => ({ file: relative(base, p), text: readFileSync(p, "utf8") }));
}
