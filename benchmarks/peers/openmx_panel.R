# Maximum likelihood of a continuous-time state-space panel with OpenMx's
# mxExpectationSSCT: one submodel per subject sharing labelled parameters, fitted
# together with mxFitFunctionMultigroup and mxRun (the way OpenMx fits panels).
#
#   Rscript openmx_panel.R DATA.csv OUTDIR
#
# DATA.csv: columns id, time, y1, y2, y3, ulag (the input held over the interval that
# ends at this row: OpenMx's SSCT applies row k's u over (t_{k-1}, t_k], kalmanad
# holds u_{k-1} there, so the caller passes u_{k-1}). Every subject's times start at
# 0, where OpenMx's x0, P0 sit (its first step from time 0 has length 0).
# Model: dx = (A x + b ulag) dt + dW (diffusion diag(q1, q2)), y = C x + d + e,
# C = [[1, 0], [0, 1], [lam, 0]], e ~ N(0, diag(r1, r2, r3)), x(0) ~ N(0, I).
# Writes OUTDIR/openmx.csv (name,value: estimates, -2 log-likelihood, status, times).
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) stop("usage: openmx_panel.R DATA.csv OUTDIR")
t_start <- proc.time()[["elapsed"]]
suppressPackageStartupMessages(library(OpenMx))
t_loaded <- proc.time()[["elapsed"]]
dir.create(args[2], showWarnings = FALSE, recursive = TRUE)
d <- read.csv(args[1])
ids <- unique(d$id)
manifest <- c("y1", "y2", "y3")
latent <- c("x1", "x2")

amat <- mxMatrix("Full", 2, 2, free = TRUE, values = c(-0.5, 0, 0, -0.5),
                 labels = c("a11", "a21", "a12", "a22"), name = "A")
bmat <- mxMatrix("Full", 2, 2, free = c(FALSE, FALSE, TRUE, TRUE), values = 0,
                 labels = c(NA, NA, "b1", "b2"), name = "B")  # u = (1, ulag)
cmat <- mxMatrix("Full", 3, 2, free = c(FALSE, FALSE, TRUE, FALSE, FALSE, FALSE),
                 values = c(1, 0, 0.5, 0, 1, 0), labels = c(NA, NA, "lam", NA, NA, NA),
                 dimnames = list(manifest, latent), name = "C")
dmat <- mxMatrix("Full", 3, 2, free = c(TRUE, TRUE, TRUE, FALSE, FALSE, FALSE), values = 0,
                 labels = c("d1", "d2", "d3", NA, NA, NA), name = "D")
qmat <- mxMatrix("Diag", 2, 2, free = TRUE, values = 1, lbound = 1e-8,
                 labels = c("q1", "q2"), name = "Q")
rmat <- mxMatrix("Diag", 3, 3, free = TRUE, values = 0.5, lbound = 1e-8,
                 labels = c("r1", "r2", "r3"), name = "R")
x0 <- mxMatrix("Full", 2, 1, values = 0, name = "x0")
p0 <- mxMatrix("Diag", 2, 2, values = 1, name = "P0")
umat <- mxMatrix("Full", 2, 1, free = FALSE, values = c(1, 0), labels = c(NA, "data.ulag"),
                 name = "u")
tmat <- mxMatrix("Full", 1, 1, free = FALSE, values = 0, labels = "data.time", name = "t")

subjects <- lapply(ids, function(i) {
  mxModel(paste0("s", i), amat, bmat, cmat, dmat, qmat, rmat, x0, p0, umat, tmat,
          mxData(d[d$id == i, c(manifest, "time", "ulag")], type = "raw"),
          mxExpectationSSCT(A = "A", B = "B", C = "C", D = "D", Q = "Q", R = "R",
                            x0 = "x0", P0 = "P0", u = "u", t = "t"),
          mxFitFunctionML())
})
panel <- mxModel("panel", subjects, mxFitFunctionMultigroup(paste0("s", ids)))
t_built <- proc.time()[["elapsed"]]
t_first <- system.time(fit <- mxRun(panel, silent = TRUE, suppressWarnings = TRUE))[["elapsed"]]
t_warm <- system.time(fit2 <- mxRun(panel, silent = TRUE, suppressWarnings = TRUE))[["elapsed"]]

est <- omxGetParameters(fit)
out <- data.frame(
  name = c(names(est), "minus2ll", "status_code", "library_load_s", "build_s", "first_mxrun_s",
           "warm_mxrun_s", "warm_minus2ll", "threads", "rscript_in_r_total_s"),
  value = c(unname(est), fit$output$Minus2LogLikelihood, fit$output$status$code,
            t_loaded - t_start, t_built - t_loaded, t_first, t_warm,
            fit2$output$Minus2LogLikelihood,
            as.numeric(mxOption(NULL, "Number of Threads")),
            proc.time()[["elapsed"]] - t_start)
)
write.csv(out, file.path(args[2], "openmx.csv"), row.names = FALSE)
cat(sprintf("OpenMx %s: mxRun %.2f s (warm %.2f s), -2LL %.6f, status %d\n",
            as.character(packageVersion("OpenMx")), t_first, t_warm,
            fit$output$Minus2LogLikelihood, fit$output$status$code))
