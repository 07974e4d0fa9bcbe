"""Lesson 1 answered by the course's own references (each must earn 0) and by the visible
example's answer typed in (``HARDCODED``, used as the wrong value where there is one)."""

BY_REFERENCE = {
    "ex1_tokens": [
        """
        from mi_course.logits import tokens_and_ids as _course_tokens_and_ids
        return _course_tokens_and_ids(model, text)
        """,
        "vocab_size = len(tokenizer)",
    ],
    "ex2_logits": """
        from mi_course.lens import lens_logits as _ll, residuals_hooks as _rh
        _ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            return _ll(model, _rh(model, _ids)[-1, 0])
        """,
    "ex3_probs": """
        from mi_course.logits import next_token_probs as _ntp
        return _ntp(logits)
        """,
    "ex4_topk": """
        from mi_course.logits import top_k_tokens as _tk
        return _tk(model, probs, k)
        """,
    "ex5_predict": [
        """
        from mi_course.logits import predict_next_token as _pn
        return _pn(model, prompt)
        """,
        """
        from mi_course.logits import top_next_tokens as _tn
        return _tn(model, prompt, 3)
        """,
        'top3_with_space = top3_next_tokens(prompt + " ")',
    ],
    "ex6_numbers": """
        from mi_course.addition.prompts import greedy_continuations as _gc, read_answer as _ra
        return _ra(_gc(model, [prompt], max_new_tokens)[0])
        """,
    "ex8_sampling": """
        from mi_course.sampling import sample_next_token as _snt
        return _snt(logits, temperature, top_k, top_p, generator)
        """,
}

HARDCODED = {
    "ex1_tokens": [
        "return ['Inter', 'pret', 'ability', 'Ġis', 'Ġfun'], [8235, 13080, 1307, 314, 1037]",
        "vocab_size = 49152",
    ],
    "ex5_predict": ['return " Paris"', 'return ["1", "2", "3"]', 'top3_with_space = ["1", "2", "3"]'],
    "ex6_numbers": "return 385",
}
