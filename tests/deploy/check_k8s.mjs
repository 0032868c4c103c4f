// Offline checks of the Kubernetes manifests in deploy/k8s: schema, unknown fields, and the
// properties tandem depends on (native sidecar, probes with the Host header, token file mode...).
//
//   node tests/deploy/check_k8s.mjs [--dir DIR] [--rendered FILE] [--env-json OUT]
//
// What it proves: every object is well-typed against the Kubernetes OpenAPI schemas compiled
// into the npm package kubernetes-models (required fields, types, formats; the version of the
// API that package was generated from), has no field the API does not know (typos would be
// dropped silently by a lenient apply; checked against the package's type declarations), and
// the cross-references and tandem-specific settings below hold. What it does not prove:
// admission by a real API server (defaulting, enum values, immutable fields, policies), or that
// the cluster runs >= 1.29 (native sidecars). --rendered also checks the output of
// `kubectl kustomize deploy/k8s` when kubectl is there.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "../..");
const argv = process.argv.slice(2);
const di = argv.indexOf("--dir");
const K8S = di >= 0 ? path.resolve(argv[di + 1]) : path.join(ROOT, "deploy/k8s");
const require = createRequire(import.meta.url);
const NM = path.join(HERE, "node_modules");

let passed = 0;
let failed = 0;
function check(name, ok, detail) {
    if (ok) {
        passed++;
        console.log(`ok   ${name}`);
    } else {
        failed++;
        console.log(`FAIL ${name}${detail ? `: ${detail}` : ""}`);
    }
    return ok;
}

// YAML 1.1 like kubectl (sigs.k8s.io/yaml): 0440 is octal there.
function parseDocs(file) {
    const text = fs.readFileSync(file, "utf8");
    return YAML.parseAllDocuments(text, { version: "1.1" }).map((d) => {
        if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
        return d.toJS();
    }).filter((o) => o != null);
}

// ---- schema: kubernetes-models (compiled OpenAPI validators) --------------------------------

function modelPath(apiVersion, kind) {
    const group = apiVersion.includes("/") ? apiVersion : `v1`;
    return `kubernetes-models/${group}/${kind}`;
}

function validateSchema(obj) {
    const mod = require(modelPath(obj.apiVersion, obj.kind));
    const Cls = mod[obj.kind] || mod.default;
    new Cls(obj).validate(); // throws with the first violations
}

// ---- unknown fields: walk the object along the package's TypeScript declarations ------------

const ifaceCache = new Map();

// The fields of the first interface declared in a .d.ts file: {name: typeText}, plus its imports.
function parseDts(file) {
    if (ifaceCache.has(file)) return ifaceCache.get(file);
    const src = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
    const imports = {};
    for (const m of src.matchAll(/import \{ ([^}]+) \} from "([^"]+)";/g)) {
        for (const n of m[1].split(",").map((s) => s.trim())) imports[n] = m[2];
    }
    const head = /export interface (\w+)(?: extends ([\w, ]+))? \{/.exec(src);
    let res = null;
    if (head) {
        let depth = 1;
        let i = head.index + head[0].length;
        const start = i;
        for (; i < src.length && depth; i++) {
            if (src[i] === "{") depth++;
            else if (src[i] === "}") depth--;
        }
        const body = src.slice(start, i - 1);
        const fields = {};
        for (const m of body.matchAll(/"([^"]+)"\??:\s*(\{[^{}]*\}|[^;]+);/g)) fields[m[1]] = m[2].trim();
        if (head[2] && head[2].includes("TypeMeta")) {
            fields.apiVersion ??= "string";
            fields.kind ??= "string";
        }
        res = { fields, imports, dir: path.dirname(file) };
    }
    ifaceCache.set(file, res);
    return res;
}

function resolveImport(fromDir, spec) {
    const p = spec.startsWith(".") ? path.resolve(fromDir, spec) : path.join(NM, spec);
    return p.replace(/\.js$/, "") + ".d.ts";
}

function walk(obj, type, ctx, where, errors) {
    if (obj == null) return;
    type = type.trim();
    let m;
    if ((m = /^Array<(.+)>$/.exec(type))) {
        if (Array.isArray(obj)) obj.forEach((v, i) => walk(v, m[1], ctx, `${where}[${i}]`, errors));
        return;
    }
    if ((m = /^\{\s*\[key: string\]:\s*([^;]+);\s*\}$/.exec(type))) {
        if (typeof obj === "object") for (const [k, v] of Object.entries(obj)) walk(v, m[1], ctx, `${where}.${k}`, errors);
        return;
    }
    if (/^"[^"]*"$/.test(type)) {
        if (obj !== JSON.parse(type)) errors.push(`${where} must be ${type}`);
        return;
    }
    if (!ctx || !ctx.imports[type]) return; // string, number, boolean, any: the schema checked it
    const info = parseDts(resolveImport(ctx.dir, ctx.imports[type]));
    if (!info) return; // a type alias (IntOrString, Quantity, Time): a scalar
    if (typeof obj !== "object" || Array.isArray(obj)) return;
    for (const [k, v] of Object.entries(obj)) {
        if (!(k in info.fields)) {
            errors.push(`${where}.${k} is not a field of ${type.replace(/^IIoK8s(Api|Apimachinery)/, "")}`);
            continue;
        }
        walk(v, info.fields[k], info, `${where}.${k}`, errors);
    }
}

function unknownFields(obj) {
    const top = parseDts(path.join(NM, modelPath(obj.apiVersion, obj.kind) + ".d.ts"));
    const errors = [];
    for (const [k, v] of Object.entries(obj)) {
        if (!(k in top.fields)) errors.push(`.${k} is not a field of ${obj.kind}`);
        else walk(v, top.fields[k], top, `.${k}`, errors);
    }
    return errors;
}

// ---- load the kustomize base -------------------------------------------------------------------

function loadBase() {
    const kust = parseDocs(path.join(K8S, "kustomization.yaml"))[0];
    const objects = [];
    const listed = new Set(["kustomization.yaml"]);
    for (const r of kust.resources || []) {
        listed.add(r);
        const f = path.join(K8S, r);
        if (!check(`kustomization resource ${r} exists`, fs.existsSync(f))) continue;
        for (const o of parseDocs(f)) objects.push({ file: r, obj: o });
    }
    for (const g of kust.configMapGenerator || []) {
        const data = {};
        let ok = true;
        for (const spec of g.files || []) {
            const [key, rel] = spec.includes("=") ? spec.split("=") : [path.basename(spec), spec];
            const f = path.join(K8S, rel);
            ok = ok && fs.existsSync(f);
            if (fs.existsSync(f)) data[key] = fs.readFileSync(f, "utf8");
        }
        check(`configMapGenerator ${g.name}: every file exists`, ok);
        objects.push({ file: "kustomization.yaml", generated: true,
            obj: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data } });
    }
    const stray = fs.readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && !listed.has(f));
    check("every manifest in deploy/k8s is listed in kustomization.yaml", stray.length === 0, stray.join(", "));
    return { kust, objects };
}

// ---- checks ------------------------------------------------------------------------------------

function schemaChecks(objects, label) {
    for (const { file, obj } of objects) {
        const id = `${label}${file}: ${obj.kind}/${obj.metadata?.name}`;
        let err = null;
        try {
            validateSchema(obj);
        } catch (e) {
            err = e.message;
        }
        check(`${id} matches the Kubernetes schema`, !err, err);
        const unknown = unknownFields(obj);
        check(`${id} has no unknown fields`, unknown.length === 0, unknown.join("; "));
    }
}

function find(objects, kind, name) {
    return objects.map((o) => o.obj).find((o) => o.kind === kind && (!name || o.metadata.name === name || o.metadata.name.startsWith(`${name}-`)));
}

const VERSION = fs.readFileSync(path.join(ROOT, "VERSION"), "utf8").trim();

function tandemChecks(objects) {
    const dep = find(objects, "Deployment", "helpdesk");
    if (!check("a Deployment helpdesk exists", !!dep)) return;
    const pod = dep.spec.template.spec;
    const sidecar = (pod.initContainers || []).find((c) => c.name === "tandem");
    check("tandem is an init container with restartPolicy: Always (native sidecar)",
        sidecar && sidecar.restartPolicy === "Always");
    check("tandem is not also a regular container", !(pod.containers || []).some((c) => c.name === "tandem"));
    if (!sidecar) return;
    check(`the tandem image tag is VERSION (${VERSION})`, sidecar.image.endsWith(`:${VERSION}`), sidecar.image);
    check("selector matches the pod labels", Object.entries(dep.spec.selector.matchLabels)
        .every(([k, v]) => dep.spec.template.metadata.labels[k] === v));

    const cfg = find(objects, "ConfigMap", "tandem-config");
    const refs = (sidecar.envFrom || []).map((e) => e.configMapRef?.name).filter(Boolean);
    check("tandem's envFrom names the tandem-config ConfigMap", cfg && refs.includes("tandem-config"));
    const env = { ...(cfg?.data || {}) };
    for (const e of sidecar.env || []) env[e.name] = e.value ?? (e.valueFrom ? "<from>" : "");
    check("every ConfigMap key is a TANDEM_ variable", Object.keys(cfg?.data || {}).every((k) => k.startsWith("TANDEM_")));
    const listen = env.TANDEM_LISTEN || "";
    const port = Number(listen.slice(listen.lastIndexOf(":") + 1));
    check(`TANDEM_LISTEN (${listen}) is on all interfaces, so kubelet's probes reach it`,
        /^(0\.0\.0\.0|\[::\]):\d+$/.test(listen));
    const cport = (sidecar.ports || []).find((p) => p.name === "tandem");
    check("the container port is TANDEM_LISTEN's port", cport && cport.containerPort === port);

    for (const [probe, wantPath] of [["startupProbe", "/healthz"], ["livenessProbe", "/healthz"], ["readinessProbe", "/readyz"]]) {
        const p = sidecar[probe];
        const hg = p?.httpGet;
        const host = (hg?.httpHeaders || []).find((h) => h.name.toLowerCase() === "host");
        check(`${probe}: GET ${wantPath}`, hg && hg.path === wantPath, hg && hg.path);
        check(`${probe}: port is the tandem port`, hg && (hg.port === "tandem" || hg.port === port));
        // The allowlist always holds localhost:<port>; kubelet's default Host is <pod IP>:<port>.
        check(`${probe}: Host header localhost:${port} (tandem's Host allowlist)`,
            host && host.value === `localhost:${port}`, host && host.value);
    }

    check("no token in the environment (TANDEM_TOKEN)", !(sidecar.env || []).some((e) => e.name === "TANDEM_TOKEN"));
    check("TANDEM_REDIS_URL (holds the password) comes from a Secret",
        (sidecar.env || []).some((e) => e.name === "TANDEM_REDIS_URL" && e.valueFrom?.secretKeyRef));
    const tokenPath = env.TANDEM_TOKEN_FILE;
    const mount = (sidecar.volumeMounts || []).find((m) => m.mountPath === tokenPath);
    check("TANDEM_TOKEN_FILE is a mounted file", !!mount, tokenPath);
    if (mount) {
        // O_NOFOLLOW in tandem: a Secret volume's keys are symlinks, a subPath mount is the file.
        check("the token is mounted with subPath (tandem refuses a symlinked token file)", !!mount.subPath);
        check("the token mount is read-only", mount.readOnly === true);
        const vol = pod.volumes.find((v) => v.name === mount.name);
        check("the token volume is a Secret", !!vol?.secret);
        check("the Secret's defaultMode is 0440", vol?.secret?.defaultMode === 0o440, vol?.secret?.defaultMode);
        check("pod fsGroup is set (the 0440 file is readable through the group)", Number.isInteger(pod.securityContext?.fsGroup));
    }
    const kbMount = (sidecar.volumeMounts || []).find((m) => m.mountPath === env.TANDEM_KB);
    const kbVol = kbMount && pod.volumes.find((v) => v.name === kbMount.name);
    check("TANDEM_KB is a mounted ConfigMap that exists", kbVol?.configMap && find(objects, "ConfigMap", kbVol.configMap.name));

    const psc = pod.securityContext || {};
    check("pod runs as the image's user 10001, non-root", psc.runAsNonRoot === true && psc.runAsUser === 10001);
    const sc = sidecar.securityContext || {};
    check("tandem: no privilege escalation, read-only root, all capabilities dropped",
        sc.allowPrivilegeEscalation === false && sc.readOnlyRootFilesystem === true &&
        (sc.capabilities?.drop || []).includes("ALL"));
    check("seccomp RuntimeDefault", psc.seccompProfile?.type === "RuntimeDefault");
    check("no service account token in the pod", pod.automountServiceAccountToken === false);
    check("no service links (they would add TANDEM_* variables)", pod.enableServiceLinks === false);
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
        const r = c.resources || {};
        check(`${c.name}: cpu and memory requests, memory limit`,
            r.requests?.cpu && r.requests?.memory && r.limits?.memory);
    }

    const np = find(objects, "NetworkPolicy");
    if (check("a NetworkPolicy exists", !!np)) {
        check("NetworkPolicy selects the helpdesk pods", Object.entries(np.spec.podSelector.matchLabels || {})
            .every(([k, v]) => dep.spec.template.metadata.labels[k] === v));
        check("NetworkPolicy restricts ingress and egress", ["Ingress", "Egress"].every((t) => np.spec.policyTypes.includes(t)));
        const inPorts = (np.spec.ingress || []).flatMap((r) => (r.ports || []).map((p) => p.port));
        const openAll = (np.spec.ingress || []).some((r) => !r.ports);
        check(`NetworkPolicy does not admit tandem's port ${port} from other pods`,
            !openAll && !inPorts.includes(port) && !inPorts.includes("tandem"), inPorts.join(","));
        const outPorts = (np.spec.egress || []).flatMap((r) => (r.ports || []).map((p) => p.port));
        check("NetworkPolicy lets the pod reach Redis (6379) and DNS (53)", outPorts.includes(6379) && outPorts.includes(53));
    }
    const svc = find(objects, "Service");
    check("no Service exposes tandem's port", !svc || !svc.spec.ports.some((p) =>
        p.targetPort === "tandem" || p.targetPort === port || p.port === port));
    const acl = find(objects, "ConfigMap", "tandem-redis-acl");
    check("the Redis ACL ConfigMap holds one 'user tandem' line",
        acl && /^user tandem on /.test(acl.data["users.acl"] || "") && acl.data["users.acl"].trim().split("\n").length === 1);
}

// ---- main ----------------------------------------------------------------------------------------

const args = argv;
const { objects } = loadBase();
schemaChecks(objects, "");
tandemChecks(objects);
const ri = args.indexOf("--rendered");
if (ri >= 0) {
    const rendered = parseDocs(args[ri + 1]).map((obj) => ({ file: "rendered", obj }));
    check("kustomize output has every object of the base", rendered.length === objects.length,
        `${rendered.length} vs ${objects.length}`);
    schemaChecks(rendered, "kustomize ");
    tandemChecks(rendered);
}
// The ConfigMap's environment, for check_acl.py's live run of tandemd with it.
const ei = args.indexOf("--env-json");
if (ei >= 0) fs.writeFileSync(args[ei + 1], JSON.stringify(find(objects, "ConfigMap", "tandem-config")?.data || {}));
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
