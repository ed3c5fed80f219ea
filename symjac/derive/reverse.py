"""Stage 2, reverse mode — adjoint differentiation over the expression DAG.

Takes sympy expressions (the traced outputs), one cotangent per output and
the symbols to differentiate with respect to; returns the vector-Jacobian
product, one expression per symbol, for ``simplify.py`` to eliminate common
subexpressions from. It is the reverse-mode sibling of ``diff.py`` and
covers the same node types with the same conventions (each function's
``fdiff``, ``sympy.diff`` where that fails, Dirac deltas dropped).

One forward pass orders the nodes that depend on a ``wrt`` symbol, children
before parents; one backward sweep gives each node its adjoint, the sum of
its parents' contributions, built once, then hands contributions to its
children. Both passes are iterative, so depth is no limit, and the gradient
costs a small constant times the function, whatever the number of inputs.

Keeping that constant small takes care with sympy's automatic evaluation:
``Mul(Mul(a, b), c)`` becomes ``Mul(a, b, c)`` and ``2*(x + y)`` becomes
``2*x + 2*y``, which would copy a shared adjoint into every use (quadratic
along a chain ``sin(sin(...))``), and canonical ordering compares similar
deep arguments structurally, as deep as they go. So products and sums whose
operands are long, nested or deep alike are built unevaluated, as one node
over whole operands, and numbers are not distributed over sums; small ones
are evaluated as usual.
"""

from __future__ import annotations

import sympy
from sympy.core.function import Application
from sympy.core.parameters import distribute

__all__ = ["vjp_expressions"]

# Piecewise-constant functions: derivative zero almost everywhere.
_FLAT = (sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling, sympy.DiracDelta)
_NOT_EXPR = (sympy.logic.boolalg.Boolean, sympy.core.relational.Relational)

# Products of at most this many factors (sums: twice as many terms) may be
# evaluated (flattened, numbers merged); larger ones are kept unevaluated.
_SMALL = 4

_ZERO, _ONE = sympy.S.Zero, sympy.S.One


def vjp_expressions(outputs, cotangents, wrt) -> list[sympy.Expr]:
    """[sum_i cotangents[i] * d outputs[i] / d wrt[k] for k in range(len(wrt))], by one adjoint sweep."""
    outputs = [sympy.sympify(output) for output in outputs]
    cotangents = [sympy.sympify(cotangent) for cotangent in cotangents]
    if len(outputs) != len(cotangents):
        raise ValueError(f"{len(outputs)} outputs but {len(cotangents)} cotangents")
    wrt = list(wrt)
    for symbol in wrt:
        if not isinstance(symbol, sympy.Symbol):
            raise TypeError(f"wrt must hold sympy Symbols, got {symbol!r} ({type(symbol).__name__})")
    wanted = frozenset(wrt)
    if len(wanted) != len(wrt):
        raise ValueError("wrt symbols must be distinct")

    order, children = _dependent_nodes(outputs, wanted)
    pending: dict = {}  # node -> contributions to its adjoint, from parents done so far
    for output, cotangent in zip(outputs, cotangents):
        if output in children and cotangent != 0:
            pending.setdefault(output, []).append(cotangent)
    gradient: dict = {}
    with distribute(False):
        for node in reversed(order):  # parents before children
            contributions = pending.pop(node, None)
            if not contributions:
                continue
            adjoint = _sum(contributions)
            if adjoint == 0:
                continue
            if node in wanted:
                gradient[node] = _build(adjoint)
                continue
            if len(children[node]) > 1 or not _chains(node):
                adjoint = _build(adjoint)
            elif not isinstance(adjoint, _Factors):
                adjoint = _Factors([adjoint])  # a chain starts
            for child, contribution in _contributions(node, adjoint, children):
                if contribution != 0:
                    pending.setdefault(child, []).append(contribution)
    return [gradient.get(symbol, _ZERO) for symbol in wrt]


# ---------------------------------------------------------------------------
# forward pass


def _operands(node, wanted):
    """The sub-expressions an adjoint flows into, or None for a leaf."""
    if not node.args or node.is_Atom:
        return None
    if node.is_Add or node.is_Mul or node.is_Pow:
        return node.args
    if isinstance(node, sympy.Piecewise):
        return tuple(expr for expr, _ in node.args)  # conditions get no adjoint
    if isinstance(node, _FLAT) or isinstance(node, _NOT_EXPR):
        return ()
    if isinstance(node, Application) and hasattr(node, "fdiff"):
        return tuple(arg for arg in node.args if isinstance(arg, sympy.Expr))
    # Anything else (Derivative, Integral, ...) is differentiated as a whole
    # by sympy.diff, directly with respect to the wanted symbols it contains.
    return tuple(sorted(node.free_symbols & wanted, key=sympy.default_sort_key))


def _dependent_nodes(outputs, wanted):
    """Nodes reachable from ``outputs`` that depend on ``wanted``, children
    first, and each such node's dependent operands (iterative post-order)."""
    depends: dict = {}
    children: dict = {}
    order: list = []
    stack = [(output, None) for output in reversed(outputs)]
    while stack:
        node, operands = stack.pop()
        if operands is not None:  # all operands done
            found = tuple(arg for arg in operands if depends[arg])
            depends[node] = bool(found)
            if found:
                children[node] = found
                order.append(node)
            continue
        if node in depends:
            continue
        operands = _operands(node, wanted)
        if operands is None:
            depends[node] = node in wanted
            if depends[node]:
                children[node] = ()
                order.append(node)
            continue
        depends[node] = False  # placeholder; a DAG never reaches a node from itself
        stack.append((node, operands))
        stack.extend((arg, None) for arg in reversed(operands) if arg not in depends)
    return order, children


# ---------------------------------------------------------------------------
# building blocks that keep shared adjoints shared


def _shallow(expr) -> bool:
    return all(not arg.args or arg.is_Atom for arg in expr.args)


def _cheap_to_sort(terms, key) -> bool:
    """True when sympy's canonical ordering of ``terms`` compares no two deep
    terms of one type: it compares those structurally, as deep as they go,
    which along a chain of similar subexpressions is quadratic."""
    kinds = set()
    for term in terms:
        core = key(term)
        if not _shallow(core):
            if type(core) in kinds:
                return False
            kinds.add(type(core))
    return True


class _Factors(list):
    """A product not built yet: the adjoint along a chain of nodes with one
    dependent operand each (``sin(exp(tanh(...)))``). Each node appends its
    partial, in place (its adjoint has no other use), and the chain's end
    builds one flat product, where nested binary products would make sympy's
    re-evaluation (``sympy.cse``, ``subs``) flatten them level by level."""


def _chains(node) -> bool:
    """Whether ``node``'s rule only multiplies its adjoint by partials."""
    return node.is_Add or node.is_Mul or node.is_Pow or (
        isinstance(node, Application) and hasattr(node, "fdiff") and not isinstance(node, sympy.Piecewise))


def _build(factors):
    """The product of a :class:`_Factors`, numbers first; anything else as is."""
    if not isinstance(factors, _Factors):
        return factors
    factors = [part for factor in factors  # small flat products open up, so numbers merge
               for part in (factor.args if factor.is_Mul and _flat_small_product(factor) else (factor,))]
    numbers = [factor for factor in factors if factor.is_Number]
    others = [factor for factor in factors if not factor.is_Number]
    coefficient = sympy.Mul(*numbers)
    if coefficient is _ZERO or not others:
        return coefficient
    if (len(factors) <= _SMALL and not any(factor.is_Mul for factor in others)
            and _cheap_to_sort(others, lambda factor: factor)):
        return sympy.Mul(coefficient, *others)
    if coefficient is not _ONE:
        others.insert(0, coefficient)
    return others[0] if len(others) == 1 else sympy.Mul(*others, evaluate=False)


def _flat_small_product(product) -> bool:
    return len(product.args) <= _SMALL and not any(arg.is_Mul for arg in product.args)


def _mul(a, b):
    """``a*b``; long, nested or deep operands are kept whole (unevaluated).
    A :class:`_Factors` ``a`` is extended in place (a chain goes on)."""
    if a is _ZERO or b is _ZERO:
        return _ZERO
    if isinstance(a, _Factors):
        if b is not _ONE:
            a.append(b)
        return a
    if a is _ONE:
        return b
    if b is _ONE:
        return a
    factors = sympy.Mul.make_args(a) + sympy.Mul.make_args(b)
    if (len(factors) <= _SMALL and not any(factor.is_Mul for factor in factors)
            and _cheap_to_sort(factors, lambda factor: factor)):
        return a * b
    if b.is_Number:
        a, b = b, a
    return sympy.Mul(a, b, evaluate=False)


def _sum(terms):
    """The sum of ``terms``; long, nested or deep terms are kept whole (unevaluated)."""
    if len(terms) == 1:
        return terms[0]
    terms = [_build(term) for term in terms]
    flat = [part for term in terms for part in sympy.Add.make_args(term)]
    if (len(flat) <= 2 * _SMALL and not any(part.is_Add for part in flat)
            and _cheap_to_sort(flat, lambda part: part.as_coeff_Mul()[1])):
        return sympy.Add(*terms)
    return sympy.Add(*terms, evaluate=False)


def _contributions(node, adjoint, children):
    """``(child, adjoint * d node / d child)`` for each dependent child."""
    found = children[node]
    if node.is_Add:
        return [(child, adjoint) for child in found]
    if node.is_Mul:
        return _mul_contributions(node, adjoint, found)
    if node.is_Pow:
        base, exponent = node.args
        result = []
        if base in found:
            result.append((base, _mul(adjoint, exponent * base ** (exponent - 1))))
        if exponent in found:
            result.append((exponent, _mul(_mul(adjoint, node), sympy.log(base))))
        return result
    if isinstance(node, sympy.Piecewise):
        return _piecewise_contributions(node, adjoint, found)
    if isinstance(node, Application) and hasattr(node, "fdiff"):
        return [(arg, _mul(adjoint, _partial(node, number)))
                for number, arg in enumerate(node.args, start=1) if arg in found]
    return [(symbol, _mul(adjoint, _almost_everywhere(node.diff(symbol), ()))) for symbol in found]


def _mul_contributions(node, adjoint, found):
    """Prefix and suffix products: about 3 multiplications per dependent factor."""
    dependent = set(found)
    factors = [arg for arg in node.args if arg in dependent]  # in order, repeats kept
    constants = [arg for arg in node.args if arg not in dependent]  # canonical order already
    scaled = _mul(adjoint, sympy.Mul._from_args(constants) if len(constants) > 1 else constants[0] if constants else _ONE)
    if len(factors) == 1:
        return [(factors[0], scaled)]
    prefix = [scaled]  # prefix[i] = adjoint * constants * factors[:i]
    for factor in factors[:-1]:
        prefix.append(_mul(prefix[-1], factor))
    result = [(factors[-1], prefix[-1])]
    suffix = factors[-1]  # factors[i + 1:]
    for i in range(len(factors) - 2, -1, -1):
        result.append((factors[i], _mul(prefix[i], suffix)))
        if i:
            suffix = _mul(factors[i], suffix)
    return result


def _piecewise_contributions(node, adjoint, found):
    """Branch k gets Piecewise((0, c_0), ..., (adjoint, c_k), (0, True))."""
    result = []
    pairs = node.args
    for k, (expr, condition) in enumerate(pairs):
        if expr not in found:
            continue
        branches = [(_ZERO, pairs[j].cond) for j in range(k)]
        if condition == sympy.true:
            branches.append((adjoint, sympy.true))
        else:
            branches += [(adjoint, condition), (_ZERO, sympy.true)]
        result.append((expr, sympy.Piecewise(*branches)))
    return result


def _partial(node, number):
    """d node / d node.args[number - 1]: ``fdiff``, else ``sympy.diff``."""
    own = set(node.args)
    own.add(node)
    partial = node.fdiff(number)
    if _find(partial, (sympy.Derivative, sympy.Subs), own):
        arg = node.args[number - 1]
        dummy = sympy.Dummy(**arg.assumptions0)
        template = node.func(*node.args[:number - 1], dummy, *node.args[number:])
        partial = sympy.diff(template, dummy).subs(dummy, arg)  # a Derivative left becomes a Subs
    return _almost_everywhere(partial, own)


def _find(expr, types, known):
    """Sub-expressions of ``expr`` of ``types``, not looking inside ``known``
    ones (a function's own arguments can be huge; its partials' new parts are small)."""
    found, stack, seen = [], [expr], set()
    while stack:
        sub = stack.pop()
        if sub in known or sub in seen:
            continue
        seen.add(sub)
        if isinstance(sub, types):
            found.append(sub)
        else:
            stack.extend(sub.args)
    return found


def _almost_everywhere(expr, known):
    """``expr`` with the Dirac deltas that sympy's derivatives give dropped."""
    deltas = _find(expr, sympy.DiracDelta, known)
    if not deltas:
        return expr
    return expr.xreplace({delta: _ZERO for delta in deltas})
